"""The request budget of one account: token bucket and AIMD on a fake clock, priority order in the gate."""

from __future__ import annotations

import asyncio

import pytest

from worker.budget import AccountGate, AdaptiveRate, Priority, TokenBucket
from worker.providers.headers import parse_quota


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_never_gives_more_than_its_rate_over_time() -> None:
    bucket = TokenBucket(rate=10.0, burst=2.0, tokens=0.0, stamp=0.0)
    granted, t = 0, 0.0
    while t < 10.0:
        wait = bucket.take(t)
        if wait == 0.0:
            granted += 1
        else:
            t += wait
    assert 99 <= granted <= 102  # 10 s at 10/s, plus at most the burst


def test_a_429_halves_the_rate_once_per_second_and_successes_climb_back() -> None:
    rate = AdaptiveRate(ceiling=100.0, floor=1.0)
    rate.on_throttled(10.0, retry_after=None)
    rate.on_throttled(10.5, retry_after=None)  # the same storm: one cut
    assert rate.rate == 50.0 and rate.throttled == 2
    rate.on_throttled(11.2, retry_after=2.0)
    assert rate.rate == 25.0 and rate.hold_until == pytest.approx(13.2)
    for _ in range(10):
        rate.on_success()
    assert rate.rate == pytest.approx(45.0)  # additive: 2 % of the ceiling per success
    for _ in range(1000):
        rate.on_success()
    assert rate.rate == 100.0


def test_the_rate_never_falls_below_its_floor() -> None:
    rate = AdaptiveRate(ceiling=8.0, floor=0.5)
    for i in range(20):
        rate.on_throttled(float(i * 2), retry_after=None)
    assert rate.rate == 0.5


def test_quota_headers_cap_the_rate_to_what_lasts_until_the_reset() -> None:
    rate = AdaptiveRate(ceiling=100.0, floor=1.0)
    rate.on_quota(remaining=30, reset_s=10.0)
    assert rate.rate == 3.0
    rate.on_quota(remaining=5000, reset_s=1.0)  # plenty: never raises the rate by itself
    assert rate.rate == 3.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s"}, (59, 1.0)),
        ({"X-RateLimit-Remaining-Requests": "0", "x-ratelimit-reset-requests": "6m0s"}, (0, 360.0)),
        ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "20ms"}, (3, 0.02)),
        ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1h2m3.5s"}, (3, 3723.5)),
        ({"x-ratelimit-remaining-requests": "many", "x-ratelimit-reset-requests": "soon"}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_quota_headers_are_parsed_or_ignored(headers: dict[str, str], expected: tuple[object, object]) -> None:
    remaining, reset = parse_quota(headers)
    assert (remaining, None if reset is None else pytest.approx(reset)) == expected


async def test_the_gate_serves_cancels_before_list_pages_before_confirmations_before_bulk_before_polls() -> None:
    gate = AccountGate(max_concurrency=1, max_requests_per_s=1_000_000)
    order: list[str] = []
    await gate.acquire(Priority.POLL)  # the one slot is busy

    async def want(name: str, priority: Priority) -> None:
        async with gate.enter(priority):
            order.append(name)

    waiters = [
        asyncio.create_task(want(n, p))
        for n, p in [
            ("poll1", Priority.POLL),
            ("poll2", Priority.POLL),
            ("child cancel", Priority.BULK),
            ("confirm", Priority.CONFIRM),
            ("list", Priority.LIST),
            ("cancel", Priority.CANCEL),
        ]
    ]
    await asyncio.sleep(0)
    assert gate.waiting == [1, 1, 1, 1, 2]
    gate.release()
    await asyncio.gather(*waiters)
    assert order == ["cancel", "list", "confirm", "child cancel", "poll1", "poll2"]
    assert gate.in_flight == 0


async def test_the_gate_holds_every_request_while_retry_after_runs() -> None:
    gate = AccountGate(max_concurrency=4, max_requests_per_s=1000)
    gate.throttled(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with gate.enter(Priority.CANCEL):
        waited = loop.time() - started
    assert waited >= 0.18
    assert gate.rate == 500.0


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = AccountGate(max_concurrency=1, max_requests_per_s=1_000_000)
    await gate.acquire(Priority.POLL)
    doomed = asyncio.create_task(gate.acquire(Priority.POLL))
    later = asyncio.create_task(gate.acquire(Priority.POLL))
    await asyncio.sleep(0)
    doomed.cancel()
    gate.release()
    await asyncio.wait_for(later, 1)
    assert gate.in_flight == 1 and doomed.cancelled()


def test_the_gate_uses_the_injected_clock_for_holds() -> None:
    clock = Clock()
    gate = AccountGate(max_concurrency=1, max_requests_per_s=10, clock=clock)
    gate.throttled(5.0)
    assert gate.adaptive.hold_until == pytest.approx(1005.0)
