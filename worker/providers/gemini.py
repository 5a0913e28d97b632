"""Gemini API batch mode: ``POST /batches/{id}:cancel``, ``GET /batches/{id}``, an API key in ``x-goog-api-key``.

A batch is a long-running Operation, ``{"name": "batches/…", "metadata": {…}, "done": …}``; the batch itself
sits under ``metadata``: ``state``, ``batchStats``, ``createTime``, ``endTime``, ``model``, ``output``. The wire
states are ``BATCH_STATE_*`` (the google-genai SDK rewrites them to ``JOB_STATE_*`` for its users; the API does
not). There is **no cancelling state**: a third-party implementer saw cancel take effect at once, so the worker
follows whatever the next read shows (``RUNNING`` means the batch has not stopped yet, and it keeps following).
``batchStats`` counts are int64, so JSON strings (``"7"``).

The cancel answers with an empty body (the SDK's ``cancel()`` returns ``None``): the client reads the batch once
after a successful cancel (``cancel_answer_is_batch``). What a cancel of a finished batch answers is not
documented: a 400 to a cancel is checked by reading the batch once (``unclear_refusals``). A refused key is a
400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID`` (or a 401/403): ``rejected`` at once.

A command carries the id without the ``batches/`` prefix (``batches/abc123`` → ``abc123``): ids hold no ``/``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from worker.contract import BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import Rejected, Retryable
from worker.providers.base import error_info, finished_at_field, opt_str
from worker.providers.google_api import GoogleDialect, google_int, google_time, rpc_error

__all__ = ["GeminiDialect"]

_STATES = {
    "BATCH_STATE_PENDING": BatchStatus.QUEUED,
    "BATCH_STATE_RUNNING": BatchStatus.IN_PROGRESS,
    "BATCH_STATE_SUCCEEDED": BatchStatus.COMPLETED,
    "BATCH_STATE_FAILED": BatchStatus.FAILED,
    "BATCH_STATE_CANCELLED": BatchStatus.CANCELLED,
    "BATCH_STATE_EXPIRED": BatchStatus.EXPIRED,
}
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


def _checked(quoted_id: str) -> str:
    if not _ID.fullmatch(quoted_id):
        raise Rejected(
            None, "invalid_batch_id", "a Gemini batch id is lowercase letters, digits and '-' (no 'batches/')"
        )
    return quoted_id


class GeminiDialect(GoogleDialect):
    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    unclear_refusals: ClassVar[frozenset[int]] = frozenset({400})
    cancel_answer_is_batch = False

    def cancel_path(self, quoted_id: str) -> str:
        return f"/batches/{_checked(quoted_id)}:cancel"

    def retrieve_path(self, quoted_id: str) -> str:
        return f"/batches/{_checked(quoted_id)}"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def parse_batch(self, body: object) -> BatchSnapshot:
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(meta, dict) or not isinstance(meta.get("state"), str):
            raise Retryable(f"answer is not a batch operation: {error_info(body).message[:120]}")
        raw: str = meta["state"]
        status = _STATES.get(raw, BatchStatus.UNKNOWN)
        stats = meta.get("batchStats")
        stats = stats if isinstance(stats, dict) else {}
        output = meta.get("output")
        output = output if isinstance(output, dict) else {}
        times: dict[str, Any] = {"created_at": google_time(meta.get("createTime"))}
        ended = finished_at_field(status)
        if ended is not None:
            times[ended] = google_time(meta.get("endTime"))
        error = body.get("error")
        return BatchSnapshot(
            status=status,
            provider_status=raw[:200],
            request_counts=RequestCounts(
                total=google_int(stats.get("requestCount")),
                completed=google_int(stats.get("successfulRequestCount")),
                failed=google_int(stats.get("failedRequestCount")),
            )
            if stats
            else None,
            errors=[rpc_error(error)] if isinstance(error, dict) else [],
            model=opt_str(meta.get("model")),
            output_file_id=opt_str(output.get("responsesFile")),
            **times,
        )
