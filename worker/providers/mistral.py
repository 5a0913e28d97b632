"""Mistral batch jobs: ``/batch/jobs/{id}``, Bearer auth, upper-case statuses and counts as top-level fields.

Statuses (an open enum in the official SDK): ``QUEUED``, ``RUNNING``, ``CANCELLATION_REQUESTED`` (our
``cancelling``), and the terminal ``SUCCESS``, ``FAILED``, ``TIMEOUT_EXCEEDED`` (our ``expired``: the job ran
out of its time) and ``CANCELLED``. Any other string stays ``unknown``, non-terminal, raw value kept.

Times are Unix seconds: ``created_at``, ``started_at`` (our ``in_progress_at``) and ``completed_at``, which
Mistral sets whichever way the job ended, so it goes to the ``*_at`` field of that end. Counts:
``total_requests`` → total, ``succeeded_requests`` → completed, ``failed_requests`` → failed
(``completed_requests`` counts both, so it is not ours to copy). ``errors`` is ``[{message, count}]``.

Listing (``GET /batch/jobs``) pages by number (``page`` from 0, ``page_size``; the answer's ``total`` says how
many match) and filters on the server by ``status`` (repeated, Mistral's words), ``model`` and ``created_after``
(the SDK's parameters, sent newest first as the SDK does). ``metadata`` is also a documented filter, but the SDK
flattens it into one query parameter per key and how the server reads that is unconfirmed, so metadata is
matched on our side; so are ``created_before`` (no such filter) and ``endpoint``. Page numbers over a list that
changes while it is read can shift: a batch that leaves the status filter (because it was just cancelled)
moves every later batch one place up, so a caller that cancels while paging may skip one — list to the end
first, or sweep again (a standing kill does).

No source shows Mistral's error bodies or its answer to cancelling a finished job, so only the generic
status rules apply, and a 400 to a cancel is checked by reading the job once (``unclear_refusals``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from worker.contract import BatchError, BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import Rejected, Retryable
from worker.providers.base import (
    Dialect,
    error_info,
    finished_at_field,
    item_id,
    listed,
    opt_int,
    opt_str,
    page_of,
    status_of,
    str_map,
    timestamp,
)
from worker.providers.listing import Criterion, ListedBatch, ListFilter, ListPage, Query, Support, rfc3339

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
    list_support: ClassVar[Mapping[Criterion, Support]] = {
        "statuses": "server",
        "created_after": "server",
        "created_before": "client",
        "model": "server",
        "endpoint": "client",
        "metadata": "client",
        "name_prefix": "unsupported",
    }
    list_unsupported_why: ClassVar[Mapping[Criterion, str]] = {"name_prefix": "its batch jobs have no name"}

    def list_path(self) -> str:
        return "/batch/jobs"

    def list_request(self, f: ListFilter, cursor: str | None, page_size: int) -> tuple[str, Query]:
        page, size = _position(cursor)
        params: Query = {"page": str(page), "page_size": str(size or page_size), "order_by": "-created"}
        words = _server_words(f.statuses)
        if words is not None:
            params["status"] = words
        if f.model is not None:
            params["model"] = f.model
        if f.created_after is not None:  # a second early: the server's bound may be exclusive; ours is not
            params["created_after"] = rfc3339(max(f.created_after - 1, 0))
        return self.list_path(), params

    def parse_list(self, body: object, f: ListFilter, cursor: str | None) -> ListPage:
        """``{data, object, total}``: another page exists while ``total`` reaches beyond this one.

        The cursor is ``{page}/{page size}`` (the size the first page was asked with, so later pages line up);
        without ``total``, an empty page ends the list.
        """
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise Retryable(f"answer is not a batch job list: {error_info(body).message[:120]}")
        items = [self.list_item(item) for item in body["data"]]
        page, size = _position(cursor)
        size = size or len(items)  # the first page: a full page (there are more) is as long as its size
        total = opt_int(body.get("total"))
        more = bool(items) and (total is None or total > page * size + len(items))
        return page_of(self, items, f, f"{page + 1}/{size}" if more else None)

    def list_item(self, item: object) -> ListedBatch:
        batch_id = item_id(item, "id")
        assert isinstance(item, dict)
        return listed(
            self, item, batch_id, metadata=str_map(item.get("metadata")), endpoint=opt_str(item.get("endpoint"))
        )

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


_CURSOR = re.compile(r"([0-9]{1,6})/([0-9]{1,4})")
#: Our status → Mistral's words for the server's ``status`` filter (the reverse of ``extra_statuses``).
_WORDS = {
    BatchStatus.VALIDATING: ("QUEUED",),
    BatchStatus.QUEUED: ("QUEUED",),
    BatchStatus.IN_PROGRESS: ("RUNNING",),
    BatchStatus.FINALIZING: ("RUNNING",),
    BatchStatus.CANCELLING: ("CANCELLATION_REQUESTED",),
    BatchStatus.CANCELLED: ("CANCELLED",),
    BatchStatus.COMPLETED: ("SUCCESS",),
    BatchStatus.FAILED: ("FAILED",),
    BatchStatus.EXPIRED: ("TIMEOUT_EXCEEDED",),
}


def _position(cursor: str | None) -> tuple[int, int | None]:
    if cursor is None:
        return 0, None
    match = _CURSOR.fullmatch(cursor)
    if match is None or int(match[2]) == 0:
        raise Rejected(None, "invalid_cursor", "a Mistral list cursor is {page}/{page size}")
    return int(match[1]), int(match[2])


def _server_words(statuses: frozenset[BatchStatus] | None) -> list[str] | None:
    """Mistral's words for ``statuses``; None (no server filter) when one of them has no word (``unknown``)."""
    if statuses is None or BatchStatus.UNKNOWN in statuses or not statuses:
        return None
    return sorted({word for status in statuses for word in _WORDS[status]})
