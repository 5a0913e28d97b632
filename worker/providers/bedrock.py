"""AWS Bedrock batch inference: ``POST /model-invocation-job/{id}/stop``, ``GET /model-invocation-job/{id}``, SigV4.

Requests go to the account's region (``https://bedrock.{region}.amazonaws.com``, or the configured ``base_url``),
signed for service ``bedrock`` (``worker.providers.aws_signing``). Statuses: ``Submitted``/``Validating`` →
``validating``, ``Scheduled`` → ``queued``, ``InProgress`` → ``in_progress``, ``Stopping`` → ``cancelling``,
``Stopped`` → ``cancelled``, ``Completed`` and ``PartiallyCompleted`` → ``completed`` (a partial one ran out of
time for some records; the raw word stays in ``provider_status``), ``Failed`` (its ``message`` says why),
``Expired``. Times are ISO 8601 (``submitTime``, ``endTime``, ``jobExpirationTime``). Record counts are not in AWS's
API reference pages for the job, but the service model botocore ships (2023-04-20, botocore 1.44) has optional
``totalRecordCount``/``successRecordCount``/``errorRecordCount``: used when present, else no counts.

The stop answers 200 with an empty body: the client reads the job once after it. Stopping a finished job is
undocumented (LiteLLM treats ``ValidationException`` as "already terminal"; AWS documents ``ConflictException``
for the stop): any 400 to a stop is checked by reading the job once (``unclear_refusals``). Errors carry their
type in ``x-amzn-ErrorType`` (the rest-json protocol) and ``{"message"}``; a refused signature or credential
(``InvalidSignatureException``, ``UnrecognizedClientException``, ``ExpiredTokenException``, ``AccessDenied…``)
is ``rejected`` at once; ``ThrottlingException`` (429) and 5xx are retried.

A command carries the job id, the 12 lowercase letters and digits that end the job ARN (ids hold no ``/``).

Listing: ``GET /model-invocation-jobs`` (``ListModelInvocationJobs``) with ``maxResults`` (≤ 1000) and
``nextToken``, newest first (``sortBy=CreationTime&sortOrder=Descending``). Server filters: ``statusEquals``
(one status only: sent when the selector's statuses are exactly one Bedrock word, else matched on our side),
``submitTimeAfter``/``submitTimeBefore`` (a second wider than ours, whose bounds are then applied exactly) and
``nameContains`` for a name prefix (ours then checks the prefix). Tags live behind one ``ListTagsForResource``
per job, so metadata selectors are refused rather than costing N+1 calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from worker.contract import BatchError, BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import ProviderError, Rejected, Retryable
from worker.providers.base import (
    Dialect,
    Op,
    error_info,
    finished_at_field,
    listed,
    opt_int,
    opt_str,
    page_of,
    status_of,
    timestamp,
)
from worker.providers.listing import Criterion, ListedBatch, ListFilter, ListPage, Query, Support, rfc3339

__all__ = ["BedrockDialect"]

_STATUSES = {
    "submitted": BatchStatus.VALIDATING,
    "scheduled": BatchStatus.QUEUED,
    "inprogress": BatchStatus.IN_PROGRESS,
    "stopping": BatchStatus.CANCELLING,
    "stopped": BatchStatus.CANCELLED,
    "partiallycompleted": BatchStatus.COMPLETED,
}
#: Every Bedrock status word and ours (``statusEquals`` takes one of these words).
_WORDS = {
    "Submitted": BatchStatus.VALIDATING,
    "Validating": BatchStatus.VALIDATING,
    "Scheduled": BatchStatus.QUEUED,
    "InProgress": BatchStatus.IN_PROGRESS,
    "Stopping": BatchStatus.CANCELLING,
    "Stopped": BatchStatus.CANCELLED,
    "Completed": BatchStatus.COMPLETED,
    "PartiallyCompleted": BatchStatus.COMPLETED,
    "Failed": BatchStatus.FAILED,
    "Expired": BatchStatus.EXPIRED,
}
#: The job identifier's pattern in the Bedrock service model, without the optional ARN prefix.
_ID = re.compile(r"[a-z0-9]{12}")
_REFUSED = frozenset(
    {
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "AccessDeniedException",
    }
)


def _checked(quoted_id: str) -> str:
    if not _ID.fullmatch(quoted_id):
        raise Rejected(None, "invalid_batch_id", "a Bedrock job id is the 12 lowercase letters/digits ending its ARN")
    return quoted_id


class BedrockDialect(Dialect):
    name = "bedrock"
    #: Only a placeholder: every account's requests go to its own region's endpoint (``url_prefix``).
    default_base_url = "https://bedrock.us-east-1.amazonaws.com"
    extra_statuses: ClassVar[Mapping[str, BatchStatus]] = _STATUSES
    unclear_refusals: ClassVar[frozenset[int]] = frozenset({400})
    cancel_answer_is_batch = False
    list_support: ClassVar[Mapping[Criterion, Support]] = {
        "statuses": "server",
        "created_after": "server",
        "created_before": "server",
        "model": "client",
        "endpoint": "unsupported",
        "metadata": "unsupported",
        "name_prefix": "server",
    }
    list_unsupported_why: ClassVar[Mapping[Criterion, str]] = {
        "endpoint": "its invocation jobs carry no endpoint",
        "metadata": "its list items carry no tags (they need one ListTagsForResource call per job; "
        "select by name_prefix instead)",
    }
    max_page_size = 1000

    def list_path(self) -> str:
        return "/model-invocation-jobs"

    def list_request(self, f: ListFilter, cursor: str | None, page_size: int) -> tuple[str, Query]:
        params: Query = {"maxResults": str(page_size), "sortBy": "CreationTime", "sortOrder": "Descending"}
        if cursor is not None:
            params["nextToken"] = cursor
        if f.statuses is not None:
            words = {word for word, status in _WORDS.items() if status in f.statuses}
            if len(words) == 1:
                params["statusEquals"] = words.pop()
        if f.created_after is not None:
            params["submitTimeAfter"] = rfc3339(max(f.created_after - 1, 0))
        if f.created_before is not None:
            params["submitTimeBefore"] = rfc3339(f.created_before + 1)
        if f.name_prefix:
            params["nameContains"] = f.name_prefix[:63]  # its documented limit; ours checks the whole prefix
        return self.list_path(), params

    def parse_list(self, body: object, f: ListFilter, cursor: str | None) -> ListPage:
        jobs = body.get("invocationJobSummaries", []) if isinstance(body, dict) else None
        if not isinstance(jobs, list):
            raise Retryable(f"answer is not a job list: {error_info(body).message[:120]}")
        assert isinstance(body, dict)
        token = body.get("nextToken")
        items = [self.list_item(job) for job in jobs]
        return page_of(self, items, f, token if isinstance(token, str) and token else None)

    def list_item(self, item: object) -> ListedBatch:
        arn = item.get("jobArn") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(arn, str) or "/" not in arn:
            raise Retryable("a list item has no jobArn: the answer is not a job list")
        return listed(self, item, arn.rsplit("/", 1)[-1], name=opt_str(item.get("jobName")))

    def cancel_path(self, quoted_id: str) -> str:
        return f"/model-invocation-job/{_checked(quoted_id)}/stop"

    def retrieve_path(self, quoted_id: str) -> str:
        return f"/model-invocation-job/{_checked(quoted_id)}"

    def auth_headers(self, key: str) -> dict[str, str]:
        raise TypeError("bedrock accounts sign with AWS credentials, not an API key")

    def parse_batch(self, body: object) -> BatchSnapshot:
        if not isinstance(body, dict) or not isinstance(body.get("status"), str) or "jobArn" not in body:
            raise Retryable(f"answer is not a model invocation job: {error_info(body).message[:120]}")
        raw: str = body["status"]
        status = status_of(raw, _STATUSES)
        times: dict[str, Any] = {
            "created_at": timestamp(body.get("submitTime")),
            "expires_at": timestamp(body.get("jobExpirationTime")),
        }
        ended = finished_at_field(status)
        if ended is not None:
            times[ended] = timestamp(body.get("endTime"))
        message = opt_str(body.get("message"))
        total = opt_int(body.get("totalRecordCount"))
        return BatchSnapshot(
            status=status,
            provider_status=raw[:200],
            request_counts=RequestCounts(
                total=total,
                completed=opt_int(body.get("successRecordCount")),
                failed=opt_int(body.get("errorRecordCount")),
            )
            if total is not None
            else None,
            errors=[BatchError(message=message)] if message and status is not BatchStatus.CANCELLED else [],
            model=opt_str(body.get("modelId")),
            **times,
        )

    def classify(self, status: int, headers: Mapping[str, str], body: object, op: Op) -> ProviderError:
        kind = _error_type(headers, body)
        if kind in _REFUSED or status in (401, 403):
            return Rejected(status, kind, f"AWS refused the request's credentials: {error_info(body).message}")
        verdict = super().classify(status, headers, body, op)
        if isinstance(verdict, Rejected) and verdict.code is None and kind is not None:
            return Rejected(verdict.http_status, kind, verdict.message)
        return verdict


def _error_type(headers: Mapping[str, str], body: object) -> str | None:
    """``x-amzn-ErrorType: ValidationException:http://…`` (rest-json), else the body's ``__type``/``code``."""
    value = headers.get("x-amzn-errortype")
    if value is None and isinstance(body, dict):
        value = body.get("__type") or body.get("code")
    if not isinstance(value, str) or not value:
        return None
    return value.split(":", 1)[0].rsplit("#", 1)[-1][:100]
