"""Vertex AI batch prediction: ``…/projects/{p}/locations/{l}/batchPredictionJobs/{id}[:cancel]``, OAuth2 bearer.

Project and location are the *account's* settings (never part of a command): ``AccountAccess.url_prefix``
carries ``https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}`` (or the
configured ``base_url`` instead of the host part), and the paths here are relative to it. The token is the
account's Google access token (``worker.providers.google_credentials``).

``JobState``: ``JOB_STATE_*`` with ``CANCELLING``, from which a job goes only to ``SUCCEEDED``, ``FAILED`` or
``CANCELLED``. ``PAUSED`` "can be resumed", so it is not an end: it maps to ``in_progress`` (the raw word travels
in ``provider_status``) and following goes on. ``PARTIALLY_SUCCEEDED`` is an end: ``completed`` (some requests
failed; ``completionStats.failedCount`` says how many). ``UPDATING`` is ``in_progress``, ``PENDING`` and
``QUEUED`` are ``queued``. Counts are ``completionStats{successfulCount, failedCount, incompleteCount}``
(int64 strings): total = all three, completed = successful, failed = failed.

The cancel answers ``{}`` (google.protobuf.Empty): the client reads the job once after it. A cancel of a finished
job is not documented: a 400 (``FAILED_PRECONDITION``) to a cancel is checked by reading the job once.
A job id is the numeric last part of the job's resource name.

Listing: ``GET …/batchPredictionJobs?pageSize=&pageToken=&filter=`` answers ``{batchPredictionJobs,
nextPageToken}``. The documented ``filter`` carries statuses (``state="JOB_STATE_…"``, OR-ed), creation times
(``createTime>="…"``, ``createTime<"…"``) and metadata as labels (``labels.k="v"``), AND-ed. Labels hold only
lowercase letters, digits, ``_`` and ``-`` (at most 63 characters), so a metadata pair that could never be a
label is refused rather than sent. Names (``displayName``) and models are matched on our side: the filter's
``:`` operator and ``modelDisplayName`` do not mean "prefix" and "model id".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from worker.contract import BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import Rejected, Retryable
from worker.providers.base import error_info, finished_at_field, listed, opt_str, page_of, str_map
from worker.providers.google_api import GoogleDialect, google_int, google_time, rpc_error
from worker.providers.listing import (
    Criterion,
    ListedBatch,
    ListFilter,
    ListPage,
    Query,
    Support,
    UnsupportedCriterion,
    rfc3339,
)

__all__ = ["VertexDialect"]

_STATES = {
    "JOB_STATE_QUEUED": BatchStatus.QUEUED,
    "JOB_STATE_PENDING": BatchStatus.QUEUED,
    "JOB_STATE_RUNNING": BatchStatus.IN_PROGRESS,
    "JOB_STATE_UPDATING": BatchStatus.IN_PROGRESS,
    "JOB_STATE_PAUSED": BatchStatus.IN_PROGRESS,
    "JOB_STATE_CANCELLING": BatchStatus.CANCELLING,
    "JOB_STATE_CANCELLED": BatchStatus.CANCELLED,
    "JOB_STATE_SUCCEEDED": BatchStatus.COMPLETED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": BatchStatus.COMPLETED,
    "JOB_STATE_FAILED": BatchStatus.FAILED,
    "JOB_STATE_EXPIRED": BatchStatus.EXPIRED,
}
_ID = re.compile(r"[0-9]{1,20}")


def _checked(quoted_id: str) -> str:
    if not _ID.fullmatch(quoted_id):
        raise Rejected(None, "invalid_batch_id", "a Vertex AI batch prediction job id is a number (1-20 digits)")
    return quoted_id


class VertexDialect(GoogleDialect):
    name = "vertex"
    #: Only a placeholder: every account's requests go to its own ``url_prefix`` (its location's host).
    default_base_url = "https://aiplatform.googleapis.com/v1"
    unclear_refusals: ClassVar[frozenset[int]] = frozenset({400})
    cancel_answer_is_batch = False
    list_support: ClassVar[Mapping[Criterion, Support]] = {
        "statuses": "server",
        "created_after": "server",
        "created_before": "server",
        "model": "client",
        "endpoint": "unsupported",
        "metadata": "server",
        "name_prefix": "client",
    }
    list_unsupported_why: ClassVar[Mapping[Criterion, str]] = {
        "endpoint": "its batch prediction jobs carry no endpoint",
    }

    def list_path(self) -> str:
        return "/batchPredictionJobs"

    def check_filter(self, f: ListFilter) -> None:
        super().check_filter(f)
        for key, value in f.metadata.items():
            if not (_LABEL_KEY.fullmatch(key) and _LABEL_VALUE.fullmatch(value)):
                raise UnsupportedCriterion(
                    self.name,
                    "metadata",
                    f"metadata is matched as labels, and {key[:64]!r}={value[:64]!r} can never be a label "
                    "(lowercase letters, digits, '_' and '-', at most 63 characters, the key starting with a letter)",
                )

    def list_request(self, f: ListFilter, cursor: str | None, page_size: int) -> tuple[str, Query]:
        self.check_filter(f)  # the filter below quotes only label-safe words
        params: Query = {"pageSize": str(page_size)}
        if cursor is not None:
            params["pageToken"] = cursor
        expression = _filter(f)
        if expression:
            params["filter"] = expression
        return self.list_path(), params

    def parse_list(self, body: object, f: ListFilter, cursor: str | None) -> ListPage:
        jobs = body.get("batchPredictionJobs", []) if isinstance(body, dict) else None
        if not isinstance(jobs, list):
            raise Retryable(f"answer is not a batch prediction job list: {error_info(body).message[:120]}")
        assert isinstance(body, dict)
        token = body.get("nextPageToken")
        return page_of(
            self, [self.list_item(job) for job in jobs], f, token if isinstance(token, str) and token else None
        )

    def list_item(self, item: object) -> ListedBatch:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(name, str) or "/batchPredictionJobs/" not in name:
            raise Retryable("a list item has no batchPredictionJobs name: the answer is not a job list")
        return listed(
            self,
            item,
            name.rsplit("/", 1)[-1],
            metadata=str_map(item.get("labels")),
            name=opt_str(item.get("displayName")),
        )

    def cancel_path(self, quoted_id: str) -> str:
        return f"/batchPredictionJobs/{_checked(quoted_id)}:cancel"

    def retrieve_path(self, quoted_id: str) -> str:
        return f"/batchPredictionJobs/{_checked(quoted_id)}"

    def auth_headers(self, key: str) -> dict[str, str]:
        raise TypeError("vertex accounts authenticate with Google credentials, not an API key")

    def parse_batch(self, body: object) -> BatchSnapshot:
        if not isinstance(body, dict) or not isinstance(body.get("state"), str):
            raise Retryable(f"answer is not a batch prediction job: {error_info(body).message[:120]}")
        raw: str = body["state"]
        status = _STATES.get(raw, BatchStatus.UNKNOWN)
        stats = body.get("completionStats")
        times: dict[str, Any] = {"created_at": google_time(body.get("createTime"))}
        ended = finished_at_field(status)
        if ended is not None:
            times[ended] = google_time(body.get("endTime"))
        error = body.get("error")
        return BatchSnapshot(
            status=status,
            provider_status=raw[:200],
            request_counts=_counts(stats) if isinstance(stats, dict) else None,
            errors=[rpc_error(error)] if isinstance(error, dict) and error else [],
            model=opt_str(body.get("model")),
            **times,
        )


def _counts(stats: dict[str, object]) -> RequestCounts:
    ok, failed, incomplete = (google_int(stats.get(n)) for n in ("successfulCount", "failedCount", "incompleteCount"))
    return RequestCounts(total=(ok or 0) + (failed or 0) + (incomplete or 0), completed=ok, failed=failed)


_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


def _filter(f: ListFilter) -> str:
    """The ``filter`` expression for what the server can evaluate; every value in it is label- or enum-safe."""
    terms: list[str] = []
    if f.statuses is not None and f.statuses and BatchStatus.UNKNOWN not in f.statuses:
        words = sorted(word for word, status in _STATES.items() if status in f.statuses)
        if words:  # none for ``finalizing`` alone: Vertex has no such state, and our side finds nothing either
            terms.append("(" + " OR ".join(f'state="{word}"' for word in words) + ")")
    if f.created_after is not None:
        terms.append(f'createTime>="{rfc3339(f.created_after)}"')
    if f.created_before is not None:
        terms.append(f'createTime<"{rfc3339(f.created_before)}"')
    terms.extend(f'labels.{key}="{value}"' for key, value in sorted(f.metadata.items()))
    return " AND ".join(terms)
