"""The one retry policy: exponential backoff with full jitter, a total time budget, and ``Retry-After``.

Built on tenacity (as stamina is) rather than a hand-written loop, so the edge cases of "stop before the next
sleep would overrun the budget" are tenacity's, not ours. Only ``Retryable`` is retried; ``Rejected`` and
``AlreadyTerminal`` pass straight through, and a spent budget becomes ``GaveUp``.

Why these choices:

* **A time budget, not only an attempt count.** A provider that is overloaded for a minute should be waited
  out whether that takes 5 attempts or 50; ``ProviderConfig.retry_budget_s`` bounds one logical call.
* **Full jitter with a floor.** Thousands of follows hitting the same overloaded provider must not retry in
  lock-step; the floor (``wait_min``) keeps the first retry from landing on the very next millisecond.
* **``Retry-After`` wins when it is longer** than our own backoff (the server knows its queue), but it is capped
  (``max_retry_after_s``) so one bad header cannot park a command for an hour; the budget still applies.
* **A testing switch** (``set_testing``, like stamina's) zeroes every wait and caps attempts, so unit tests of
  retrying code run without sleeping. It is process-global on purpose and tests reset it in a fixture.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from worker.errors import GaveUp, Retryable

__all__ = [
    "RetryPolicy",
    "call_with_retry",
    "is_testing",
    "parse_quota",
    "parse_retry_after",
    "set_testing",
    "testing",
]

log = logging.getLogger("worker.retry")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Defaults live here once; a provider only overrides ``budget_s`` (from its config)."""

    wait_min_s: float = 0.1  # floor of every backoff wait
    wait_first_s: float = 0.5  # ceiling of the first wait; doubles per attempt
    wait_max_s: float = 30.0  # ceiling of any backoff wait
    max_retry_after_s: float = 60.0  # a server hint longer than this is cut down to it
    budget_s: float = 120.0  # total time one logical call may spend, attempts and waits included

    def backoff(self, attempt: int) -> float:
        """Wait before retry number ``attempt`` (1-based): uniform between the floor and a doubling ceiling."""
        ceiling = min(self.wait_max_s, self.wait_first_s * 2 ** min(attempt - 1, 30))
        return random.uniform(min(self.wait_min_s, ceiling), ceiling)


@dataclass(frozen=True)
class _Testing:
    attempts: int


_testing: _Testing | None = None


def set_testing(on: bool, *, attempts: int = 10) -> None:
    """Zero every wait (``Retry-After`` included) and stop after ``attempts``; for tests only."""
    global _testing  # noqa: PLW0603 - a deliberate process-wide switch, like stamina.set_testing
    _testing = _Testing(attempts) if on else None


def is_testing() -> bool:
    return _testing is not None


@contextmanager
def testing(*, attempts: int = 10) -> Iterator[None]:
    """``set_testing`` for the duration of a block, restoring the previous state afterwards."""
    previous = _testing
    set_testing(True, attempts=attempts)
    try:
        yield
    finally:
        set_testing(previous is not None, attempts=previous.attempts if previous else 10)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` first, then ``Retry-After`` (seconds or HTTP date).

    Returns None when absent or unparseable (a malformed hint must never break error handling) and never a
    negative number; capping is the policy's job, not the parser's.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms.strip()) / 1000.0
        except ValueError:
            value = None
        if value is not None and math.isfinite(value) and value >= 0:
            return min(value, 86_400.0)
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
    return min(max(seconds, 0.0), 86_400.0)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_quota(headers: Mapping[str, str]) -> tuple[int | None, float | None]:
    """OpenAI-style request quota: ``x-ratelimit-remaining-requests`` and ``x-ratelimit-reset-requests``.

    The reset is a Go-style duration (``1s``, ``6m0s``, ``20ms``). Either part is None when absent or
    unparseable: not every endpoint sends them (their presence on ``/batches`` is unconfirmed), and a
    malformed header must never break a call.
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


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    def wait(state: tenacity.RetryCallState) -> float:
        if _testing is not None:
            return 0.0
        delay = policy.backoff(state.attempt_number)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, policy.max_retry_after_s))
        return delay

    return wait


def _stop(policy: RetryPolicy) -> tenacity.stop.stop_base:
    if _testing is not None:
        return tenacity.stop_after_attempt(_testing.attempts)
    # Stop *before* a sleep that would overrun the budget: better to give up now than to wake up too late.
    return tenacity.stop_before_delay(policy.budget_s)


def _cause(state: tenacity.RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome is not None else None
    return str(exc) if exc is not None else "unknown"


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    on_retry: Callable[[int, BaseException | None, float], None] | None = None,
) -> T:
    """Run ``fn`` until it succeeds, raises a non-retryable error, or the budget is spent (``GaveUp``).

    ``what`` names the call in log lines (provider, operation, batch id — never a key or a URL with a secret).
    ``on_retry(attempt, error, wait_s)`` is told of every retry (metrics and span events hang off it).

    The first attempt runs bare: nearly every call succeeds at once, and building tenacity's machinery per
    call was 6 % of the worker's CPU (docs/benchmarks.md). A first ``Retryable`` is handed to tenacity as its
    attempt 1 (re-raised, not re-sent), so numbering, waits, logs and the budget's clock behave as before —
    the budget starts counting when that first attempt failed.
    """
    try:
        return await fn()
    except Retryable as exc:
        first: list[Retryable] = [exc]

    async def attempt() -> T:
        if first:
            raise first.pop()
        return await fn()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        if on_retry is not None:
            on_retry(state.attempt_number, state.outcome.exception() if state.outcome else None, wait)
        log.info(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            what,
            state.attempt_number,
            _cause(state),
            wait,
            extra={"retry_what": what, "attempt": state.attempt_number, "cause": _cause(state), "wait_s": wait},
        )

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(Retryable),
        wait=_wait(policy),
        stop=_stop(policy),
        before_sleep=before_sleep,
        sleep=_sleep,
        reraise=False,
    )
    try:
        return await retrying(attempt)
    except tenacity.RetryError as exc:
        last = exc.last_attempt
        cause = _cause_of(last)
        log.warning(
            "%s: giving up after %d attempt(s): %s",
            what,
            last.attempt_number,
            cause,
            extra={"retry_what": what, "attempt": last.attempt_number, "cause": cause},
        )
        raise GaveUp(cause, last.attempt_number) from last.exception()


def _cause_of(future: tenacity.Future) -> str:
    exc = future.exception()
    return str(exc) if exc is not None else "unknown"
