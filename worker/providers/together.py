"""Together AI batches: OpenAI's paths, upper-case statuses, ISO times and a percentage instead of counts.

Statuses: ``VALIDATING``, ``IN_PROGRESS``, ``COMPLETED``, ``FAILED``, ``EXPIRED``, ``CANCELLED``, and
``CANCELING`` — listed by the legacy SDK but not by the current one, so a cancel may show either
``CANCELING`` or the old status until ``CANCELLED``; both are followed the same way (the base maps the words
in any case, ``canceling`` included). Any other string stays ``unknown``, non-terminal, raw value kept.

Times are ISO 8601: ``created_at``; ``completed_at``, set when the batch ended, goes to the ``*_at`` field
of that end; ``job_deadline`` is our ``expires_at``. There are no request counts, only ``progress`` 0 to 100,
which our contract has no field for (it is not carried). ``error`` is one string; ``model_id`` is the model.

Listing is one unpaginated call, ``GET /batches``, answering a bare JSON array of every batch of the user
(both SDKs); there are no server-side filters and no metadata, so metadata selectors are refused and the rest
is matched on our side.

No source shows Together's error bodies or its answer to cancelling a finished batch ("cancel only while
VALIDATING or IN_PROGRESS"), so the generic status rules apply and a 400 to a cancel is checked by reading
the batch once (``unclear_refusals``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from worker.contract import BatchError, BatchSnapshot
from worker.errors import Retryable
from worker.providers.base import (
    Dialect,
    error_info,
    finished_at_field,
    item_id,
    listed,
    opt_str,
    page_of,
    status_of,
    timestamp,
)
from worker.providers.listing import Criterion, ListedBatch, ListFilter, ListPage, Query, Support

__all__ = ["TogetherDialect"]


class TogetherDialect(Dialect):
    name = "together"
    default_base_url = "https://api.together.ai/v1"
    unclear_refusals: ClassVar[frozenset[int]] = frozenset({400})
    list_support: ClassVar[Mapping[Criterion, Support]] = {
        "statuses": "client",
        "created_after": "client",
        "created_before": "client",
        "model": "client",
        "endpoint": "client",
        "metadata": "unsupported",
        "name_prefix": "unsupported",
    }
    list_unsupported_why: ClassVar[Mapping[Criterion, str]] = {
        "metadata": "its batches carry no metadata",
        "name_prefix": "its batches have no name",
    }

    def list_request(self, f: ListFilter, cursor: str | None, page_size: int) -> tuple[str, Query]:
        return self.list_path(), {}  # no parameters at all: one answer holds every batch

    def parse_list(self, body: object, f: ListFilter, cursor: str | None) -> ListPage:
        if not isinstance(body, list):
            raise Retryable(f"answer is not a batch list: {error_info(body).message[:120]}")
        return page_of(self, [self.list_item(item) for item in body], f, None)

    def list_item(self, item: object) -> ListedBatch:
        batch_id = item_id(item, "id")
        assert isinstance(item, dict)
        return listed(self, item, batch_id, endpoint=opt_str(item.get("endpoint")))

    def parse_batch(self, body: object) -> BatchSnapshot:
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise Retryable(f"answer is not a batch object: {error_info(body).message[:120]}")
        raw: str = body["status"]
        status = status_of(raw, self.extra_statuses)
        times: dict[str, Any] = {
            "created_at": timestamp(body.get("created_at")),
            "expires_at": timestamp(body.get("job_deadline")),
        }
        ended = finished_at_field(status)
        if ended is not None:
            times[ended] = timestamp(body.get("completed_at"))
        error = opt_str(body.get("error"))
        return BatchSnapshot(
            status=status,
            provider_status=raw[:200],
            errors=[BatchError(message=error)] if error else [],
            output_file_id=opt_str(body.get("output_file_id")),
            error_file_id=opt_str(body.get("error_file_id")),
            model=opt_str(body.get("model_id")),
            **times,
        )
