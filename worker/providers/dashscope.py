"""Alibaba DashScope / Qwen Cloud in OpenAI-compatible mode.

Quirks, from Alibaba Cloud Model Studio's "Batch interfaces compatible with OpenAI" and Qwen Cloud's API
reference ("Cancel batch", docs.qwencloud.com): absent timestamps are ``0`` (the base maps them to ``None``);
``errors`` is ``{object: "list", data: [...]}``; throttling is signalled by codes ``Throttling``,
``Throttling.RateQuota`` and ``Throttling.AllocationQuota`` — retried whatever the HTTP status, because the
compatible-mode error shape is unconfirmed and may arrive as DashScope's native ``{"code", "message"}`` or as
OpenAI's ``{"error": {...}}`` (``error_info`` reads both).
"""

from __future__ import annotations

from worker.errors import ProviderError, Retryable
from worker.providers.base import Dialect, ErrorInfo

__all__ = ["DashScopeDialect"]


class DashScopeDialect(Dialect):
    name = "dashscope"
    default_base_url = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"

    def classify_body(self, status: int, info: ErrorInfo) -> ProviderError | None:
        for word in (info.code, info.type):
            if word and word.startswith("Throttling"):
                return Retryable(f"HTTP {status} {word}: {info.message}", http_status=status)
        return None
