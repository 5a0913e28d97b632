"""Alibaba DashScope / Qwen Cloud in OpenAI-compatible mode.

Quirks, from Alibaba Cloud Model Studio's "Batch interfaces compatible with OpenAI" and Qwen Cloud's API
reference ("Cancel batch", docs.qwencloud.com): absent timestamps are ``0`` (the base maps them to ``None``);
``errors`` is ``{object: "list", data: [...]}``; throttling is signalled by codes ``Throttling``,
``Throttling.RateQuota`` and ``Throttling.AllocationQuota`` — retried whatever the HTTP status, because the
compatible-mode error shape is unconfirmed and may arrive as DashScope's native ``{"code", "message"}`` or as
OpenAI's ``{"error": {...}}`` (``error_info`` reads both).

Listing is OpenAI's (``after``, ``limit`` 1-100), newest first, and **covers only the last 30 days**
(docs.qwencloud.com, "List batches"): an older batch is invisible to a selector (it can still be cancelled by
id). The documented server filters (task-name fuzzy match, status, created time) have unconfirmed parameter
names, so nothing is sent and everything is matched on our side; the task name is ``metadata.ds_name``, which
``name_prefix`` matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from worker.errors import ProviderError, Retryable
from worker.providers.base import OPENAI_LIST_SUPPORT, Dialect, ErrorInfo, item_id, listed, opt_str, str_map
from worker.providers.listing import Criterion, ListedBatch, Support

__all__ = ["DashScopeDialect"]


class DashScopeDialect(Dialect):
    name = "dashscope"
    default_base_url = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
    list_support: ClassVar[Mapping[Criterion, Support]] = {**OPENAI_LIST_SUPPORT, "name_prefix": "client"}
    newest_first = True  # "sorted by creation time in descending order"

    def list_item(self, item: object) -> ListedBatch:
        batch_id = item_id(item, "id")
        assert isinstance(item, dict)
        metadata = str_map(item.get("metadata"))
        return listed(
            self,
            item,
            batch_id,
            metadata=metadata,
            endpoint=opt_str(item.get("endpoint")),
            name=metadata.get("ds_name"),
        )

    def classify_body(self, status: int, info: ErrorInfo) -> ProviderError | None:
        for word in (info.code, info.type):
            if word and word.startswith("Throttling"):
                return Retryable(f"HTTP {status} {word}: {info.message}", http_status=status)
        return None
