"""The one retry module: every retry in the worker runs on tenacity through one of its two entry points.

``call_with_retry`` is for provider calls: exponential backoff with full jitter, a total time budget, and
``Retry-After``. ``retry_until_done`` is for the worker's own Kafka work that must not give up (publishing,
reading follows back): capped backoff until it succeeds or is cancelled.

Built on tenacity (as stamina is) rather than hand-written loops, so the edge cases of "stop before the next
sleep would overrun the budget" are tenacity's, not ours. For provider calls only ``Retryable`` is retried;
``Rejected`` and ``AlreadyTerminal`` pass straight through, and a spent budget becomes ``GaveUp``.

Why these choices (for provider calls):

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
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from worker.errors import GaveUp, Retryable

__all__ = [
    "RetryPolicy",
    "call_with_retry",
    "is_testing",
    "retry_until_done",
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
        return _backoff(attempt, self.wait_first_s, self.wait_max_s, floor_s=self.wait_min_s)


def _backoff(attempt: int, first_s: float, max_s: float, *, floor_s: float = 0.0, floor_share: float = 0.0) -> float:
    """The one backoff: before retry ``attempt`` (1-based), a ceiling doubling from ``first_s`` up to ``max_s``,
    and a wait drawn uniformly below it (full jitter), no lower than ``floor_s`` (capped by the ceiling) nor
    than ``floor_share`` of the ceiling."""
    ceiling = min(max_s, first_s * 2 ** min(attempt - 1, 30))
    return random.uniform(max(min(floor_s, ceiling), ceiling * floor_share), ceiling)


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


def _cause(outcome: tenacity.Future | None) -> str:
    """An attempt's error, for a log line (its message: the errors' own messages carry no secret)."""
    exc = outcome.exception() if outcome is not None else None
    return str(exc) if exc is not None else "unknown"


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _retrying(fn: Callable[[], Awaitable[T]], first_error: BaseException, retrying: tenacity.AsyncRetrying) -> T:
    """The one path after a bare first attempt failed with ``first_error``.

    Both entry points run the first attempt without tenacity: nearly every call succeeds at once, and
    building tenacity's machinery per call is measurable CPU (the profile in docs/benchmarks.md). The error
    is then handed to tenacity as its attempt 1 (raised again, not sent again), so attempt numbers, waits,
    logs and a time budget's clock count from the real first attempt.
    """
    pending = [first_error]

    async def attempt() -> T:  # tenacity calls, without awaiting, anything not defined with ``async def``
        if pending:
            raise pending.pop()
        return await fn()

    return await retrying(attempt)


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

    The first attempt runs bare (``_retrying``); the budget starts counting when it failed.

    A retry runs under what is left of the budget: tenacity only checks it before a sleep, so without this a
    retry started just inside the budget could wait behind the account's other calls (``max_concurrency``)
    and then for a provider that never answers (``read_timeout_s``) for as long as they take — issue 29's
    scenario e measured 50 s for a 20 s budget.
    """
    try:
        return await fn()
    except Retryable as exc:
        first_error = exc
    budget_started = time.monotonic()
    attempts = 1

    async def bounded() -> T:
        nonlocal attempts
        attempts += 1
        left = asyncio.timeout(max(0.0, policy.budget_s - (time.monotonic() - budget_started)))
        try:
            async with left:
                return await fn()
        except TimeoutError:
            if not left.expired():
                raise
            cause = f"retry budget of {policy.budget_s:g}s spent during attempt {attempts}"
            log.warning(
                "%s: giving up: %s", what, cause, extra={"retry_what": what, "attempt": attempts, "cause": cause}
            )
            raise GaveUp(cause, attempts) from None

    def before_sleep(state: tenacity.RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        if on_retry is not None:
            on_retry(state.attempt_number, state.outcome.exception() if state.outcome else None, wait)
        log.info(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            what,
            state.attempt_number,
            _cause(state.outcome),
            wait,
            extra={"retry_what": what, "attempt": state.attempt_number, "cause": _cause(state.outcome), "wait_s": wait},
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
        return await _retrying(bounded, first_error, retrying)
    except tenacity.RetryError as exc:
        last = exc.last_attempt
        cause = _cause(last)
        log.warning(
            "%s: giving up after %d attempt(s): %s",
            what,
            last.attempt_number,
            cause,
            extra={"retry_what": what, "attempt": last.attempt_number, "cause": cause},
        )
        raise GaveUp(cause, last.attempt_number) from last.exception()


async def retry_until_done(
    fn: Callable[[], Awaitable[T]],
    *,
    retry_if: Callable[[BaseException], bool],
    on_retry: Callable[[int, BaseException, float], None],
    wait_first_s: float,
    wait_max_s: float,
) -> T:
    """Run ``fn`` until it succeeds; an error ``retry_if`` accepts is retried without end, any other is raised.

    For work that must happen eventually, where giving up would lose something: publishing an outcome (a
    command without one keeps its offset stuck), reading a partition's follows back (taking its commands in
    without them would cancel every batch again). Only cancellation stops it. Waits double from
    ``wait_first_s`` up to ``wait_max_s``, each a random 50-100 % of that ceiling so that many callers failing
    together do not retry together; ``set_testing`` zeroes them. ``on_retry(attempt, error, wait_s)`` is told
    of every failure before its wait: the caller logs and counts (it knows which errors are worth an alarm).

    Provider calls, which have a time budget and ``Retry-After``, use ``call_with_retry`` instead.
    """
    try:
        return await fn()  # bare, as every record the worker publishes runs this (see ``_retrying``)
    except Exception as exc:
        if not retry_if(exc):
            raise
        first_error = exc

    def wait(state: tenacity.RetryCallState) -> float:
        if _testing is not None:
            return 0.0
        return _backoff(state.attempt_number, wait_first_s, wait_max_s, floor_share=0.5)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        on_retry(state.attempt_number, error or RuntimeError("unknown"), sleep)

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(retry_if),
        wait=wait,
        stop=tenacity.stop_never,
        before_sleep=before_sleep,
        sleep=asyncio.sleep,  # a zero wait still yields: a loop that never awaits would starve every other task
        reraise=True,
    )
    return await _retrying(fn, first_error, retrying)
