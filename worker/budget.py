"""What one provider account can bear: requests in flight, requests per second, and who goes first.

Every HTTP attempt to an account passes its ``AccountGate``: a concurrency slot (``max_concurrency``) and a
rate token (``max_requests_per_s``), handed out in priority order, so a kill-switch cancel never waits
behind routine polls of batches that are already cancelling:

1. ``CANCEL``: a new command's cancel POST (and its retries);
2. ``LIST``: one page of a selector's batch list (a kill switch by selector, a standing kill's sweep);
3. ``CONFIRM``: the first GET after a cancel, and a poll a newcomer is waiting on;
4. ``BULK``: the cancel POST of a selector's child (one of possibly thousands a kill switch publishes);
5. ``POLL``: every routine poll, and a child's confirming GET.

Why ``LIST`` sits there: a kill switch must be fast, and every one of its cancels waits for the page that names
the batch, so a list page must not queue behind thousands of routine polls. But a plain cancel, which names its
batch already, still overtakes it: a page is one request that yields up to a hundred (Anthropic: a thousand)
cancels, and those cancels then run at ``CANCEL`` and overtake the next page in turn, so the expansion streams
rather than lists everything first. List pages are few (at most 2 % of a kill switch's requests with 100-item
pages), so ranking them above confirms costs confirms and polls almost nothing.

Why ``BULK`` sits there: a kill switch over 10,000 batches queues 10,000 cancels at once. At ``CANCEL`` they
would hold up a plain cancel (and the confirmation a waiting publisher wants) for as long as the budget needs to
send them all; below routine polls they would wait for every follow of the account. So they come after the
requests someone is waiting on and before the routine ones, and a child's own confirming GET drops to ``POLL``,
so the budget goes to the remaining cancels first (a cancelling batch bills nothing more for being read late).

The allowed rate adapts (additive increase, multiplicative decrease). A 429 halves it (never below
``floor``) and, with ``Retry-After``, holds every request of the account until then; quota headers that
say the remaining requests will not last until the reset cap it; each success adds back a small step,
so the rate climbs to the configured budget within seconds to a minute once the provider stops refusing.
Budget exhaustion delays requests, never drops them.

The arithmetic (``TokenBucket``, ``AdaptiveRate``) is pure and takes the time as an argument, so it is tested
with a fake clock; ``AccountGate`` is the thin asyncio layer around it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = ["AccountGate", "AdaptiveRate", "Priority", "TokenBucket"]


class Priority(IntEnum):
    CANCEL = 0
    LIST = 1
    CONFIRM = 2
    BULK = 3
    POLL = 4


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``take`` answers how long to wait for one."""

    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = 0.0

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> float:
        """0.0 and one token taken, or the seconds until one will be there (nothing taken)."""
        self.refill(now)
        if self.tokens >= 1.0 - 1e-9:  # refilling by exactly the wait it asked for can land a hair short
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class AdaptiveRate:
    """The rate an account is allowed right now, between ``floor`` and ``ceiling`` (AIMD)."""

    ceiling: float
    floor: float
    rate: float = 0.0
    #: Each success adds this share of the ceiling: from the floor back to the ceiling in ~50 successes.
    step: float = 0.02
    hold_until: float = 0.0
    throttled: int = 0
    _last_cut: float = field(default=float("-inf"))

    def __post_init__(self) -> None:
        self.rate = self.rate or self.ceiling

    def on_success(self) -> None:
        self.rate = min(self.ceiling, self.rate + self.ceiling * self.step)

    def on_throttled(self, now: float, retry_after: float | None) -> None:
        """A 429. Cut at most once per second: a burst of 429s in flight at once is one signal, not ten."""
        self.throttled += 1
        if now - self._last_cut >= 1.0:
            self.rate = max(self.floor, self.rate / 2)
            self._last_cut = now
        if retry_after is not None and retry_after > 0:
            self.hold_until = max(self.hold_until, now + retry_after)

    def on_quota(self, remaining: int | None, reset_s: float | None) -> None:
        """Quota headers: never spend faster than the remaining requests last until the window resets."""
        if remaining is None or reset_s is None or reset_s <= 0:
            return
        allowed = remaining / reset_s
        if allowed < self.rate:
            self.rate = max(self.floor, allowed)


class AccountGate:
    """Concurrency slots and rate tokens of one account, served in ``Priority`` order (FIFO within one)."""

    def __init__(
        self,
        max_concurrency: int,
        max_requests_per_s: float,
        *,
        floor: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._free = max_concurrency
        self.max_concurrency = max_concurrency
        self.adaptive = AdaptiveRate(ceiling=max_requests_per_s, floor=floor or max(0.1, max_requests_per_s / 50))
        # A small burst (10 ms worth): any one-second window then holds at most 1 % more than the budget.
        self._bucket = TokenBucket(rate=max_requests_per_s, burst=max(1.0, max_requests_per_s / 100), stamp=clock())
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.waiting = [0] * len(Priority)  # by priority, for the metrics

    @property
    def rate(self) -> float:
        return self.adaptive.rate

    @property
    def in_flight(self) -> int:
        return self.max_concurrency - self._free

    @asynccontextmanager
    async def enter(self, priority: Priority) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, priority: Priority) -> None:
        if not self._waiters and self._free > 0 and self._grant_token() == 0.0:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._order), future))
        self.waiting[priority] += 1
        self._pump()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted as we were cancelled: give it back
                self.release()
            raise
        finally:
            self.waiting[priority] -= 1

    def release(self) -> None:
        self._free += 1
        self._pump()

    def throttled(self, retry_after: float | None) -> None:
        self.adaptive.on_throttled(self._clock(), retry_after)
        self._bucket.rate = self.adaptive.rate
        self._bucket.tokens = min(self._bucket.tokens, 0.0)

    def succeeded(self) -> None:
        self.adaptive.on_success()
        self._bucket.rate = self.adaptive.rate

    def quota(self, remaining: int | None, reset_s: float | None) -> None:
        self.adaptive.on_quota(remaining, reset_s)
        self._bucket.rate = self.adaptive.rate

    def _grant_token(self) -> float:
        now = self._clock()
        if now < self.adaptive.hold_until:
            return self.adaptive.hold_until - now
        return self._bucket.take(now)

    def _pump(self) -> None:
        """Hand slots and tokens to the waiters in order; when tokens run out, come back when one is due."""
        while self._waiters and self._free > 0:
            _, _, future = self._waiters[0]
            if future.done():  # its acquirer was cancelled
                heapq.heappop(self._waiters)
                continue
            wait = self._grant_token()
            if wait > 0:
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(wait, self._wake)
                return
            heapq.heappop(self._waiters)
            self._free -= 1
            future.set_result(None)

    def _wake(self) -> None:
        self._timer = None
        self._pump()
