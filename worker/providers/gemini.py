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

Listing: ``GET /batches?pageSize=&pageToken=`` answers ``{operations, nextPageToken}`` (an operations list).
The discovery document has a ``filter`` parameter, but google-genai refuses it outside Vertex mode, so no filter
is sent. A batch has ``displayName`` and ``model`` but no labels: metadata selectors are refused, names and
models are matched on our side.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from worker.contract import BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import Rejected, Retryable
from worker.providers.base import error_info, finished_at_field, listed, opt_str, page_of
from worker.providers.google_api import GoogleDialect, google_int, google_time, rpc_error
from worker.providers.listing import Criterion, ListedBatch, ListFilter, ListPage, Query, Support

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
    list_support: ClassVar[Mapping[Criterion, Support]] = {
        "statuses": "client",
        "created_after": "client",
        "created_before": "client",
        "model": "client",
        "endpoint": "unsupported",
        "metadata": "unsupported",
        "name_prefix": "client",
    }
    list_unsupported_why: ClassVar[Mapping[Criterion, str]] = {
        "endpoint": "its batches carry no endpoint (every batch is generateContent)",
        "metadata": "its batches carry no labels or metadata (only a displayName; select by name_prefix)",
    }

    def list_request(self, f: ListFilter, cursor: str | None, page_size: int) -> tuple[str, Query]:
        params: Query = {"pageSize": str(page_size)}
        if cursor is not None:
            params["pageToken"] = cursor
        return self.list_path(), params

    def parse_list(self, body: object, f: ListFilter, cursor: str | None) -> ListPage:
        if not isinstance(body, dict) or not isinstance(body.get("operations", []), list):
            raise Retryable(f"answer is not a batch list: {error_info(body).message[:120]}")
        items = [self.list_item(item) for item in body.get("operations", [])]  # an empty list is left out
        token = body.get("nextPageToken")
        return page_of(self, items, f, token if isinstance(token, str) and token else None)

    def list_item(self, item: object) -> ListedBatch:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(name, str) or not name.startswith("batches/"):
            raise Retryable("a list item has no batches/… name: the answer is not a batch list")
        meta = item.get("metadata")
        display = meta.get("displayName") if isinstance(meta, dict) else None
        return listed(self, item, name.removeprefix("batches/"), name=opt_str(display))

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
