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
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from worker.contract import BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import Rejected, Retryable
from worker.providers.base import error_info, finished_at_field, opt_str
from worker.providers.google_api import GoogleDialect, google_int, google_time, rpc_error

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
