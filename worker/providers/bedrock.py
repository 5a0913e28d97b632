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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from worker.contract import BatchError, BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import ProviderError, Rejected, Retryable
from worker.providers.base import Dialect, Op, error_info, finished_at_field, opt_int, opt_str, status_of, timestamp

__all__ = ["BedrockDialect"]

_STATUSES = {
    "submitted": BatchStatus.VALIDATING,
    "scheduled": BatchStatus.QUEUED,
    "inprogress": BatchStatus.IN_PROGRESS,
    "stopping": BatchStatus.CANCELLING,
    "stopped": BatchStatus.CANCELLED,
    "partiallycompleted": BatchStatus.COMPLETED,
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
