"""Mistral batch jobs: ``/batch/jobs/{id}``, Bearer auth, upper-case statuses and counts as top-level fields.

Statuses (an open enum in the official SDK): ``QUEUED``, ``RUNNING``, ``CANCELLATION_REQUESTED`` (our
``cancelling``), and the terminal ``SUCCESS``, ``FAILED``, ``TIMEOUT_EXCEEDED`` (our ``expired``: the job ran
out of its time) and ``CANCELLED``. Any other string stays ``unknown``, non-terminal, raw value kept.

Times are Unix seconds: ``created_at``, ``started_at`` (our ``in_progress_at``) and ``completed_at``, which
Mistral sets whichever way the job ended, so it goes to the ``*_at`` field of that end. Counts:
``total_requests`` → total, ``succeeded_requests`` → completed, ``failed_requests`` → failed
(``completed_requests`` counts both, so it is not ours to copy). ``errors`` is ``[{message, count}]``.

No source shows Mistral's error bodies or its answer to cancelling a finished job, so only the generic
status rules apply, and a 400 to a cancel is checked by reading the job once (``unclear_refusals``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from worker.contract import BatchError, BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import Retryable
from worker.providers.base import Dialect, error_info, finished_at_field, opt_int, opt_str, status_of, timestamp

__all__ = ["MistralDialect"]


class MistralDialect(Dialect):
    name = "mistral"
    default_base_url = "https://api.mistral.ai/v1"
    extra_statuses: ClassVar[Mapping[str, BatchStatus]] = {
        "queued": BatchStatus.QUEUED,
        "running": BatchStatus.IN_PROGRESS,
        "cancellation_requested": BatchStatus.CANCELLING,
        "success": BatchStatus.COMPLETED,
        "timeout_exceeded": BatchStatus.EXPIRED,
    }
    unclear_refusals: ClassVar[frozenset[int]] = frozenset({400})

    def cancel_path(self, quoted_id: str) -> str:
        return f"/batch/jobs/{quoted_id}/cancel"

    def retrieve_path(self, quoted_id: str) -> str:
        return f"/batch/jobs/{quoted_id}"

    def parse_batch(self, body: object) -> BatchSnapshot:
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise Retryable(f"answer is not a batch job: {error_info(body).message[:120]}")
        raw: str = body["status"]
        status = status_of(raw, self.extra_statuses)
        times: dict[str, Any] = {
            "created_at": timestamp(body.get("created_at")),
            "in_progress_at": timestamp(body.get("started_at")),
        }
        ended = finished_at_field(status)
        if ended is not None:
            times[ended] = timestamp(body.get("completed_at"))
        counts = RequestCounts(
            total=opt_int(body.get("total_requests")),
            completed=opt_int(body.get("succeeded_requests")),
            failed=opt_int(body.get("failed_requests")),
        )
        return BatchSnapshot(
            status=status,
            provider_status=raw[:200],
            request_counts=counts if counts.model_dump(exclude_none=True) else None,
            errors=_errors(body.get("errors")),
            output_file_id=opt_str(body.get("output_file")),
            error_file_id=opt_str(body.get("error_file")),
            model=opt_str(body.get("model")),
            **times,
        )


def _errors(value: object) -> list[BatchError]:
    if not isinstance(value, list):
        return []
    return [
        BatchError(message=(opt_str(item.get("message")) or "")[:1000] or None)
        for item in value[:100]
        if isinstance(item, dict)
    ]
