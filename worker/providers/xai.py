"""xAI batches: ``POST /batches/{id}:cancel`` and a batch object with no status string at all.

The batch carries counters, ``state{num_requests, num_pending, num_success, num_error, num_cancelled}``, and
xAI's docs define "finished" as nothing pending. The worker derives our status from them:

* something pending → ``cancelling`` once ``cancel_time`` is set, else ``in_progress``;
* nothing pending and some request cancelled → ``cancelled``;
* nothing pending, none cancelled, some requests → ``completed`` (all of them ran before a cancel could
  stop one, so the final carries ``completed`` — the batch beat the cancel);
* no requests at all → ``cancelled`` once ``cancel_time`` is set, else ``in_progress``: an xAI batch is
  created empty and filled afterwards, so an empty, uncancelled batch is open, not done.

``provider_status`` keeps the raw counters as one string (there is no raw word to keep). The JSON is the
protobuf ``Batch`` message of xAI's SDK: zero counters may be left out and 64-bit ones may arrive as strings,
times are RFC 3339 (``create_time`` → ``created_at``, ``expire_time`` → ``expires_at``, ``cancel_time`` →
``cancelling_at``; there is no end time). Error bodies and the answer to cancelling a finished batch are not
documented: the generic status rules apply, and a 400 to a cancel is checked by reading the batch once.

Listing: ``GET /batches?limit=&pagination_token=`` answers ``{batches, pagination_token}`` (the SDK's
``ListBatchesResponse``); an empty or absent token ends the list. No filters; a batch has a ``name`` but no
model, endpoint or metadata, so only statuses, times and a name prefix can be selected (on our side).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from worker.contract import BatchError, BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import Retryable
from worker.providers.base import Dialect, error_info, item_id, listed, opt_str, page_of, timestamp
from worker.providers.listing import Criterion, ListedBatch, ListFilter, ListPage, Query, Support

__all__ = ["XAIDialect"]

_COUNTERS = ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled")


class XAIDialect(Dialect):
    name = "xai"
    default_base_url = "https://api.x.ai/v1"
    unclear_refusals: ClassVar[frozenset[int]] = frozenset({400})
    list_support: ClassVar[Mapping[Criterion, Support]] = {
        "statuses": "client",
        "created_after": "client",
        "created_before": "client",
        "model": "unsupported",
        "endpoint": "unsupported",
        "metadata": "unsupported",
        "name_prefix": "client",
    }
    list_unsupported_why: ClassVar[Mapping[Criterion, str]] = {
        "model": "its batches carry no model (each request names its own)",
        "endpoint": "its batches carry no endpoint",
        "metadata": "its batches carry no metadata (only a name; select by name_prefix)",
    }

    def list_request(self, f: ListFilter, cursor: str | None, page_size: int) -> tuple[str, Query]:
        params: Query = {"limit": str(page_size)}
        if cursor is not None:
            params["pagination_token"] = cursor
        return self.list_path(), params

    def parse_list(self, body: object, f: ListFilter, cursor: str | None) -> ListPage:
        if not isinstance(body, dict) or not isinstance(body.get("batches", []), list):
            raise Retryable(f"answer is not a batch list: {error_info(body).message[:120]}")
        items = [self.list_item(item) for item in body.get("batches", [])]  # proto JSON leaves an empty list out
        token = body.get("pagination_token")
        return page_of(self, items, f, token if isinstance(token, str) and token and items else None)

    def list_item(self, item: object) -> ListedBatch:
        batch_id = item_id(item, "batch_id")
        assert isinstance(item, dict)
        return listed(self, item, batch_id, name=opt_str(item.get("name")))

    def cancel_path(self, quoted_id: str) -> str:
        return f"/batches/{quoted_id}:cancel"

    def parse_batch(self, body: object) -> BatchSnapshot:
        if not isinstance(body, dict) or not isinstance(body.get("batch_id"), str):
            raise Retryable(f"answer is not a batch object: {error_info(body).message[:120]}")
        state = body.get("state")
        if state is not None and not isinstance(state, dict):
            raise Retryable("batch state is not an object")
        counts = {name: _counter((state or {}).get(name)) for name in _COUNTERS}
        cancel_requested = timestamp(body.get("cancel_time"))
        message = opt_str(body.get("cancel_by_xai_message"))
        return BatchSnapshot(
            status=_status(counts, cancelled=cancel_requested is not None),
            provider_status=" ".join(f"{name}={value}" for name, value in counts.items()),
            created_at=timestamp(body.get("create_time")),
            expires_at=timestamp(body.get("expire_time")),
            cancelling_at=cancel_requested,
            request_counts=RequestCounts(
                total=counts["num_requests"], completed=counts["num_success"], failed=counts["num_error"]
            ),
            errors=[BatchError(message=message)] if message else [],
        )


def _counter(value: object) -> int:
    """Protobuf JSON: an absent counter is 0, an int64 may be a decimal string."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _status(counts: dict[str, int], *, cancelled: bool) -> BatchStatus:
    if counts["num_pending"] > 0:
        return BatchStatus.CANCELLING if cancelled else BatchStatus.IN_PROGRESS
    if counts["num_cancelled"] > 0:
        return BatchStatus.CANCELLED
    if counts["num_requests"] > 0:
        return BatchStatus.COMPLETED
    return BatchStatus.CANCELLED if cancelled else BatchStatus.IN_PROGRESS
