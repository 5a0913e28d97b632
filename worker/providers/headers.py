"""What a provider's response headers say about when to call again: ``Retry-After`` and the request quota.

HTTP parsing, beside the dialects that read error bodies (``base.py``); the retry module only consumes the
result (``Retryable.retry_after``) and the account budget the quota (``worker.budget``). Both parsers are
lenient: a malformed or missing header is ``None``, never an exception, so it cannot break error handling.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping

__all__ = ["parse_quota", "parse_retry_after"]

#: No hint is taken as longer than a day; capping to policy is the retry policy's job.
_LONGEST_HINT_S = 86_400.0


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` first, then ``Retry-After`` (seconds or HTTP date).

    ``retry-after-ms`` is what OpenAI sends (and openai-python reads first); ``Retry-After`` is RFC 9110
    §10.2.3. Returns None when absent or unparseable and never a negative number.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms.strip()) / 1000.0
        except ValueError:
            value = None
        if value is not None and math.isfinite(value) and value >= 0:
            return min(value, _LONGEST_HINT_S)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT by definition
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _LONGEST_HINT_S)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_quota(headers: Mapping[str, str]) -> tuple[int | None, float | None]:
    """OpenAI-style request quota: ``x-ratelimit-remaining-requests`` and ``x-ratelimit-reset-requests``.

    The reset is a Go-style duration (``1s``, ``6m0s``, ``20ms``). Either part is None when absent or
    unparseable: not every endpoint sends them (their presence on ``/batches`` is unconfirmed).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    remaining: int | None = None
    raw = lowered.get("x-ratelimit-remaining-requests")
    if raw is not None and raw.strip().isdigit():
        remaining = int(raw.strip())
    reset: float | None = None
    raw = lowered.get("x-ratelimit-reset-requests")
    if raw is not None:
        text = raw.strip()
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            reset = sum(float(n) * _UNIT_S[u] for n, u in parts)
    return remaining, reset
