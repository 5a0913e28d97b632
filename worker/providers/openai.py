"""OpenAI, and by configuration any OpenAI-compatible API (Groq, Azure v1, gateways): the reference dialect.

Quirks: cancelling a finished batch answers **409** ``Cannot cancel a batch with status 'completed'.`` (handled
by the base as already-terminal); a 429 whose code is ``insufficient_quota`` is a billing problem, not load,
so it is rejected rather than retried. Both are the base's rules (``providers/base.py``); this dialect adds
nothing to them.
"""

from __future__ import annotations

from worker.providers.base import Dialect

__all__ = ["OpenAIDialect"]


class OpenAIDialect(Dialect):
    name = "openai"
    default_base_url = "https://api.openai.com/v1"
