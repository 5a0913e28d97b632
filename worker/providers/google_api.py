"""What the two Google batch APIs (Gemini API, Vertex AI) share: error bodies, times and int64 counts.

Google APIs answer errors as ``{"error": {"code": 404, "message": "...", "status": "NOT_FOUND", "details": [...]}}``
(google.rpc.Status): the canonical ``status`` word is the code worth keeping, and an ``ErrorInfo`` detail may
carry a ``reason`` (``API_KEY_INVALID``). Times are RFC 3339 with up to nanoseconds; int64 fields arrive as JSON
strings (proto3 JSON mapping), so ``"7"`` is 7.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.contract import BatchError
from worker.errors import ProviderError, Rejected
from worker.providers.base import Dialect, ErrorInfo, Op, error_info, timestamp

__all__ = ["GoogleDialect", "google_int", "google_time", "rpc_error"]

#: ``status`` words that mean the credentials themselves were refused (never worth a retry).
_REFUSED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
#: ``ErrorInfo.reason`` values of a refused API key (Gemini answers those with 400 INVALID_ARGUMENT).
_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED"})


def google_int(value: object) -> int | None:
    """A proto3 int64: a decimal string (or, leniently, a JSON integer); anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        return int(value)
    return None


def google_time(value: object) -> int | None:
    """RFC 3339 with 0 to 9 fractional digits (Python before 3.12 reads at most 6); None when not a time."""
    if not isinstance(value, str):
        return None
    head, dot, rest = value.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        value = f"{head}.{rest[: min(digits, 6)] or '0'}{rest[digits:]}"
    return timestamp(value)


def rpc_error(status: dict[str, object]) -> BatchError:
    """A job's or an Operation's ``error``: a google.rpc.Status ``{code, message}``."""
    code, message = status.get("code"), status.get("message")
    return BatchError(
        code=str(code) if isinstance(code, int) and not isinstance(code, bool) else None,
        message=message[:1000] if isinstance(message, str) else None,
    )


class GoogleDialect(Dialect):
    """Google's error body: the canonical status word as the code; refused credentials are never retried."""

    def classify(self, status: int, headers: Mapping[str, str], body: object, op: Op) -> ProviderError:
        word, reason = _status_and_reason(body)
        message = error_info(body).message
        if status in (401, 403) or word in _REFUSED or reason in _KEY_REASONS:
            if reason in _KEY_REASONS:
                return Rejected(status, reason, f"API key refused: {message}")
            detail = f" ({reason})" if reason else ""
            return Rejected(status, word or reason, f"credentials refused{detail}: {message}")
        verdict = super().classify(status, headers, body, op)
        if isinstance(verdict, Rejected) and verdict.code in (None, str(status)):
            return Rejected(verdict.http_status, word or verdict.code, verdict.message)
        return verdict

    def classify_body(self, status: int, info: ErrorInfo) -> ProviderError | None:
        return None


def _status_and_reason(body: object) -> tuple[str | None, str | None]:
    inner = body.get("error") if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        return None, None
    word = inner.get("status") if isinstance(inner.get("status"), str) else None
    reason = None
    details = inner.get("details")
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
            reason = detail["reason"][:100]
            break
    return (word[:100] if word else None), reason
