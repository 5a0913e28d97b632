"""DeepInfra's OpenAI-compatible batch API.

Quirks, from DeepInfra's API reference ("Cancel Openai Batch", docs.deepinfra.com) and batch guide:
``status`` is typed as a free string (unknown values become ``unknown``, raw kept);
the object carries ``model`` and ``usage`` (kept in the snapshot). Two path prefixes are documented; the
default is the guide's ``/v1/openai`` base that the OpenAI SDK uses. Error bodies are unconfirmed (FastAPI
``{"detail": …}`` is likely; ``error_info`` reads it), so only the generic status rules apply.
"""

from __future__ import annotations

from worker.providers.base import Dialect

__all__ = ["DeepInfraDialect"]


class DeepInfraDialect(Dialect):
    name = "deepinfra"
    default_base_url = "https://api.deepinfra.com/v1/openai"
