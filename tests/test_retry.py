"""Backoff, Retry-After parsing and the retry loop, with the testing switch so nothing really sleeps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from email.utils import formatdate

import pytest

from worker import retry
from worker.errors import GaveUp, Rejected, Retryable
from worker.providers.headers import parse_retry_after
from worker.retry import RetryPolicy, call_with_retry

NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _reset_testing() -> Iterator[None]:
    yield
    retry.set_testing(False)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # ms wins, as in openai-python
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"Retry-After": formatdate(NOW + 7, usegmt=True)}, 7.0),
        ({"Retry-After": formatdate(NOW - 60, usegmt=True)}, 0.0),  # a date in the past: go now
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "9999999"}, 86_400.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    policy = RetryPolicy()
    first = [policy.backoff(1) for _ in range(200)]
    assert all(0.1 <= w <= 0.5 for w in first) and max(first) - min(first) > 0.2
    assert all(0.1 <= policy.backoff(3) <= 2.0 for _ in range(100))
    assert all(policy.backoff(60) <= 30.0 for _ in range(100))


def _wait_for(exc: Retryable, policy: RetryPolicy, attempt: int = 1) -> float:
    import tenacity

    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), None, (), {})
    state.attempt_number = attempt
    state.set_exception((Retryable, exc, None))
    return retry._wait(policy)(state)


def test_retry_after_is_a_floor_and_is_capped() -> None:
    policy = RetryPolicy(max_retry_after_s=5.0)
    assert _wait_for(Retryable("429", retry_after=3.0), policy) == 3.0
    assert _wait_for(Retryable("429", retry_after=3600.0), policy) == 5.0
    assert 0.1 <= _wait_for(Retryable("503"), policy) <= 0.5
    with retry.testing():
        assert _wait_for(Retryable("429", retry_after=3.0), policy) == 0.0


async def test_retries_until_success_and_logs_each_attempt(caplog: pytest.LogCaptureFixture) -> None:
    retry.set_testing(True)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Retryable(f"overloaded #{calls}")
        return "ok"

    with caplog.at_level(logging.INFO, logger="worker.retry"):
        assert await call_with_retry(flaky, policy=RetryPolicy(), what="p cancel b1") == "ok"
    assert calls == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "worker.retry"]
    assert len(messages) == 2 and "overloaded #1" in messages[0] and "p cancel b1" in messages[0]


async def test_permanent_errors_are_not_retried() -> None:
    retry.set_testing(True)
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise Rejected(401, None, "Invalid token")

    with pytest.raises(Rejected):
        await call_with_retry(refused, policy=RetryPolicy(), what="x")
    assert calls == 1


async def test_gives_up_with_cause_and_attempt_count() -> None:
    retry.set_testing(True, attempts=5)

    async def always() -> None:
        raise Retryable("HTTP 503: busy")

    with pytest.raises(GaveUp) as info:
        await call_with_retry(always, policy=RetryPolicy(), what="x")
    assert info.value.attempts == 5 and info.value.cause == "HTTP 503: busy"


async def test_time_budget_stops_before_an_overrunning_sleep() -> None:
    calls = 0

    async def always() -> None:
        nonlocal calls
        calls += 1
        raise Retryable("busy", retry_after=10.0)  # the hinted wait alone would overrun the budget

    with pytest.raises(GaveUp):
        await call_with_retry(always, policy=RetryPolicy(budget_s=1.0), what="x")
    assert calls == 1


def test_testing_context_restores_previous_state() -> None:
    assert not retry.is_testing()
    with retry.testing():
        assert retry.is_testing()
    assert not retry.is_testing()


async def test_retry_until_done_retries_what_it_is_told_to_until_it_succeeds() -> None:
    retry.set_testing(True)
    calls = 0
    told: list[tuple[int, str]] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise OSError(f"down #{calls}")
        return "ok"

    def plain() -> Awaitable[str]:  # not ``async def``, as the consumer's restore passes a lambda
        return flaky()

    result = await retry.retry_until_done(
        plain,
        retry_if=lambda exc: isinstance(exc, OSError),
        on_retry=lambda attempt, exc, wait: told.append((attempt, str(exc))),
        wait_first_s=0.1,
        wait_max_s=5.0,
    )
    assert result == "ok" and calls == 4
    assert told == [(1, "down #1"), (2, "down #2"), (3, "down #3")]


async def test_retry_until_done_raises_what_it_must_not_retry_at_once() -> None:
    calls = 0

    async def too_large() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("too large")

    with pytest.raises(ValueError, match="too large"):
        await retry.retry_until_done(
            too_large,
            retry_if=lambda exc: isinstance(exc, OSError),
            on_retry=lambda *_: pytest.fail("nothing to retry"),
            wait_first_s=0.1,
            wait_max_s=5.0,
        )
    assert calls == 1


async def test_retry_until_done_waits_grow_and_are_capped() -> None:
    waits: list[float] = []
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        if calls <= 6:
            raise OSError("down")

    async def no_sleep(_: float) -> None:
        return None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "sleep", no_sleep)
        await retry.retry_until_done(
            down,
            retry_if=lambda exc: isinstance(exc, OSError),
            on_retry=lambda attempt, exc, wait: waits.append(wait),
            wait_first_s=1.0,
            wait_max_s=4.0,
        )
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert len(waits) == 6
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits


async def test_a_retry_that_waits_past_the_budget_gives_up_when_the_budget_ends() -> None:
    """A retry queued behind the account's other calls, or sent to a provider that never answers, is cut off
    when the budget runs out, not when the queue or the read timeout lets it go (issue 29, scenario e)."""
    calls = 0
    never = asyncio.Event()

    async def hangs_after_the_first() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Retryable("read timeout")
        await never.wait()  # waiting for a slot, or for an answer that never comes

    policy = RetryPolicy(wait_min_s=0.01, wait_first_s=0.01, budget_s=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        with pytest.raises(GaveUp, match=r"budget of 0\.5s spent during attempt 2"):
            await call_with_retry(hangs_after_the_first, policy=policy, what="p cancel b1")
    assert calls == 2
    assert loop.time() - started < 0.5 + 0.3
