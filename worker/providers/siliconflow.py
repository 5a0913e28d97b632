"""SiliconFlow (硅基流动): OpenAI-shaped batches with its own status word and its own error bodies.

Quirks, from SiliconFlow's API reference ("Cancel a Batch", api-docs.siliconflow.cn, and the batch guide
docs.siliconflow.cn/cn/userguide/guides/batch) and its legacy error-code table:

* status ``in_queue`` means queued; ``errors`` is ``null`` on cancel and ``[]`` on retrieve, typed as a list
  of strings; ``request_counts`` is ``null`` then ``{}`` (both become ``None``).
* errors come as ``{"code": 50505, "message": …, "data": …}`` or as bare JSON strings (``"Invalid token"``,
  ``"404 page not found"``). Codes 505xx/506xx are overload and rate-limit codes that the legacy table maps
  to 503/504/429 — retried **whatever the HTTP status**, because the status↔code pairing is inferred, not
  seen verbatim, and a 50505 under a 400 or 200 wrapper must still be waited out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from worker.contract import BatchStatus
from worker.errors import ProviderError, Retryable
from worker.providers.base import Dialect, ErrorInfo

__all__ = ["SiliconFlowDialect"]


class SiliconFlowDialect(Dialect):
    name = "siliconflow"
    default_base_url = "https://api.siliconflow.cn/v1"
    extra_statuses: ClassVar[Mapping[str, BatchStatus]] = {"in_queue": BatchStatus.QUEUED}

    def classify_body(self, status: int, info: ErrorInfo) -> ProviderError | None:
        code = (info.code or "").strip()
        if code.isdigit() and 50500 <= int(code) <= 50699:
            return Retryable(f"HTTP {status} code {code}: {info.message}", http_status=status)
        return None
