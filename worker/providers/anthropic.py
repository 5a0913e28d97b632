"""Anthropic Message Batches: its own object, its own headers, and an outcome read from the counts.

``processing_status`` is ``in_progress``, ``canceling`` or ``ended``, and ``ended`` is the only terminal value:
a batch we cancelled still *ends*. Which outcome an ended batch carries is decided from ``request_counts``
(the counts are all zero except ``processing`` until the batch ends, so they are final by then):

* any ``canceled`` request → ``cancelled`` (our cancel, or a cancel by anyone, took effect);
* else any ``expired`` request → ``expired`` (the 24 h window closed first);
* else → ``completed``: every request succeeded or errored, so the batch finished before a cancel could
  stop anything — also when ``cancel_initiated_at`` is set (the cancel arrived too late to matter).

``ended_at`` goes to that outcome's ``*_at`` field, ``cancel_initiated_at`` to ``cancelling_at``; times are
RFC 3339 strings. Counts map to ours as total = all five, completed = succeeded, failed = errored.
``results_url`` is not a file id and is not carried.

Errors are ``{"type": "error", "error": {"type", "message"}}``: 529 ``overloaded_error`` and 429
``rate_limit_error`` (with ``retry-after``) are retried by the base rules; the spend-limit 429s
(``error.details.error_code`` ``enforced_spend_limit_reached``, or ``contract_spend_limit_reached``, which the
2.x SDK also types as its own error) are billing stops and are rejected. What a cancel
of an ended batch answers is undocumented (third-party clones assume 400 ``invalid_request_error``), so any
400 to a cancel is checked by reading the batch once (``unclear_refusals``).

Auth: ``x-api-key``, the header Anthropic's API reference documents for API keys (the 2.x Python SDK sends
the same key as a Bearer token; the API takes both) plus the pinned ``anthropic-version``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from worker.contract import BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import ProviderError, Rejected, Retryable
from worker.providers.base import (
    Dialect,
    ErrorInfo,
    error_info,
    finished_at_field,
    item_id,
    listed,
    opt_int,
    timestamp,
)
from worker.providers.listing import Criterion, ListedBatch, ListFilter, Query, Support

__all__ = ["ANTHROPIC_VERSION", "AnthropicDialect"]

ANTHROPIC_VERSION = "2023-06-01"
#: 429s that are billing stops, not load (``error.details.error_code``; named in the SDK's error types).
_SPEND_LIMITS = frozenset({"enforced_spend_limit_reached", "contract_spend_limit_reached"})
_STATUSES = {"in_progress": BatchStatus.IN_PROGRESS, "canceling": BatchStatus.CANCELLING}
_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


class AnthropicDialect(Dialect):
    name = "anthropic"
    default_base_url = "https://api.anthropic.com/v1"
    unclear_refusals: ClassVar[frozenset[int]] = frozenset({400})

    list_support: ClassVar[Mapping[Criterion, Support]] = {
        "statuses": "client",
        "created_after": "client",
        "created_before": "client",
        "model": "unsupported",
        "endpoint": "unsupported",
        "metadata": "unsupported",
        "name_prefix": "unsupported",
    }
    list_unsupported_why: ClassVar[Mapping[Criterion, str]] = {
        "model": "its batch list items carry no model (each request of a batch names its own)",
        "endpoint": "every message batch is a batch of Messages requests; its items carry no endpoint",
        "metadata": "its batch list items carry no metadata",
        "name_prefix": "its batches have no name",
    }
    max_page_size = 1000
    newest_first = True  # "Most recently created batches are returned first" (the SDK's list docstring)

    def list_path(self) -> str:
        return "/messages/batches"

    def list_request(self, f: ListFilter, cursor: str | None, page_size: int) -> tuple[str, Query]:
        """``limit`` (1-1000) and ``after_id``: the next page holds the batches created before that one."""
        params: Query = {"limit": str(page_size)}
        if cursor is not None:
            params["after_id"] = cursor
        return self.list_path(), params

    def list_item(self, item: object) -> ListedBatch:
        batch_id = item_id(item, "id")
        assert isinstance(item, dict)
        return listed(self, item, batch_id)

    def cancel_path(self, quoted_id: str) -> str:
        return f"/messages/batches/{quoted_id}/cancel"

    def retrieve_path(self, quoted_id: str) -> str:
        return f"/messages/batches/{quoted_id}"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}

    def parse_batch(self, body: object) -> BatchSnapshot:
        if not isinstance(body, dict) or not isinstance(body.get("processing_status"), str):
            raise Retryable(f"answer is not a message batch: {error_info(body).message[:120]}")
        raw: str = body["processing_status"]
        counts = body.get("request_counts")
        counts = {name: opt_int(counts.get(name)) or 0 for name in _COUNTS} if isinstance(counts, dict) else None
        status = _status(raw, counts)
        times: dict[str, Any] = {
            "created_at": timestamp(body.get("created_at")),
            "expires_at": timestamp(body.get("expires_at")),
            "cancelling_at": timestamp(body.get("cancel_initiated_at")),
        }
        ended = finished_at_field(status)
        if ended is not None:
            times[ended] = timestamp(body.get("ended_at"))
        return BatchSnapshot(
            status=status,
            provider_status=raw[:200],
            request_counts=_our_counts(counts),
            **times,
        )

    def classify_body(self, status: int, info: ErrorInfo) -> ProviderError | None:
        if status == 429 and info.code in _SPEND_LIMITS:
            return Rejected(status, info.code, info.message)
        return None


def _status(raw: str, counts: dict[str, int] | None) -> BatchStatus:
    if raw != "ended":
        return _STATUSES.get(raw, BatchStatus.UNKNOWN)
    if counts is None:  # an ended batch without counts: finished, but how is unknowable; keep following visible
        return BatchStatus.UNKNOWN
    if counts["canceled"]:
        return BatchStatus.CANCELLED
    if counts["expired"]:
        return BatchStatus.EXPIRED
    return BatchStatus.COMPLETED


def _our_counts(counts: dict[str, int] | None) -> RequestCounts | None:
    if counts is None:
        return None
    return RequestCounts(total=sum(counts.values()), completed=counts["succeeded"], failed=counts["errored"])
