"""Azure OpenAI: OpenAI's batch object behind a per-resource address, an ``api-key`` header and API versions.

Two APIs, chosen by configuration: the classic one (``base_url: https://RESOURCE.openai.azure.com/openai``
plus ``api_version``, sent as ``?api-version=…`` on every call) and the v1 one (``base_url: …/openai/v1``, no
version). Both take the key in ``api-key``. The status enum is OpenAI's; Microsoft's own reference examples
show ISO 8601 times, capitalised statuses (``"Validating"``) and ``null`` counts — the base parser accepts all
three, so nothing here depends on whether the live service really answers that way.

An account may sign in with Microsoft Entra ID instead (``azure_credential``): a bearer token from
``worker.providers.azure_credentials``, refreshed before it expires and renewed once after a 401. A 401 that
remains — a refused key, or a new token refused again — is ``credentials_refused``, never retried.
No source shows what cancelling a finished batch answers on Azure; 409 (OpenAI's) and a 400 are both checked
by reading the batch once (``unclear_refusals``).
"""

from __future__ import annotations

from typing import ClassVar

from worker.errors import ProviderError, Rejected
from worker.providers.base import Dialect, ErrorInfo

__all__ = ["AzureDialect"]


class AzureDialect(Dialect):
    name = "azure"
    default_base_url = ""  # every resource has its own: config must name it
    unclear_refusals: ClassVar[frozenset[int]] = frozenset({400})

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key}

    def classify_body(self, status: int, info: ErrorInfo) -> ProviderError | None:
        if status == 401:
            return Rejected(status, "credentials_refused", f"Azure refused the credentials: {info.message}")
        return None
