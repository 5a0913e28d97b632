"""When each follow polls: one scheduler per provider account, follows ordered by due time.

A follow between polls is an entry in a heap, not a sleeping task: 100,000 follows cost 100,000 small tuples,
and a bounded set of runners (the account's ``max_concurrency``) serves them. When the account's request
budget cannot serve every due poll on time, polls stretch fairly: the most overdue is served first, and
nothing is dropped. Confirmation polls (the first GET after a cancel, a poll a newcomer waits on) have a heap
of their own that is served before routine polls. Cancels not yet sent have a lane apart: each runs as its
own task as soon as it is due (up to ``CANCELS_AT_ONCE`` per account, the rest wait as heap entries), so a
cancel never waits for a poll runner, and the ``AccountGate`` then puts every cancel attempt (retries too)
ahead of every GET on the wire. A selector's children (``bulk``) have a lane of their own with its own, smaller
allowance of tasks (``BULK_CANCELS_AT_ONCE``): ten thousand of them queued by a kill switch neither take the
tasks a plain cancel needs nor stand before it in a queue.

Entries are never removed in place: rescheduling a follow bumps its ``ticket`` and the old entry is skipped
when it reaches the top, which keeps every operation O(log n).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["PollScheduler", "Pollable"]

log = logging.getLogger("worker.scheduler")


class Pollable(Protocol):
    """A follow, as the scheduler sees it."""

    ticket: int

    async def poll(self) -> float | None:
        """Poll once; the seconds until the next poll, or None when the follow needs no more."""
        ...


_Entry = tuple[float, int, int, Pollable]  # due, order, ticket, follow
#: Unsent cancels of one account running at once (each its own task, through retries and backoffs).
CANCELS_AT_ONCE = 1_000
#: A selector's children's cancels running at once per account: enough to keep any budget busy (they wait at the
#: gate behind plain cancels), few enough that thousands queued are heap entries, not tasks.
BULK_CANCELS_AT_ONCE = 200


class PollScheduler:
    """Due-time heaps (confirmations first) served by ``runners`` coroutines."""

    def __init__(self, name: str, runners: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._cancels: list[_Entry] = []
        self._bulk: list[_Entry] = []
        self._urgent: list[_Entry] = []
        self._routine: list[_Entry] = []
        self._heaps = (self._cancels, self._bulk, self._urgent, self._routine)
        self._order = itertools.count()
        self._tickets = itertools.count(1)
        self._changed = asyncio.Event()
        # Cancels do not share the poll runners: when every runner waits for the budget inside a poll (or in a
        # retry's backoff), a new cancel must still reach the account's gate at once, where it goes ahead of
        # every waiting poll. Each unsent cancel gets its own task, up to CANCELS_AT_ONCE, so the backoffs of
        # cancels retried through an outage overlap; beyond that they wait here as heap entries, not tasks.
        polls = (self._urgent, self._routine)
        self._cancel_tasks: set[asyncio.Task[None]] = set()
        # A fresh context each: the scheduler is made while a command is being taken in, and a task copies the
        # context it is created in; the runners would otherwise carry that one command's trace forever.
        self._runners = [
            *(
                asyncio.create_task(self._run(polls), name=f"poll {name} #{i}", context=contextvars.Context())
                for i in range(runners)
            ),
            asyncio.create_task(
                self._start_cancels(self._cancels, asyncio.Semaphore(CANCELS_AT_ONCE)),
                name=f"cancels {name}",
                context=contextvars.Context(),
            ),
            asyncio.create_task(
                self._start_cancels(self._bulk, asyncio.Semaphore(BULK_CANCELS_AT_ONCE)),
                name=f"bulk cancels {name}",
                context=contextvars.Context(),
            ),
        ]

    def schedule(
        self, follow: Pollable, delay: float, *, urgent: bool = False, cancel: bool = False, bulk: bool = False
    ) -> None:
        """Call ``follow.poll`` in ``delay`` seconds; replaces any earlier scheduling of it. ``cancel`` entries
        (a follow whose cancel is not sent yet; ``bulk`` for a selector's child) are served before
        confirmations, confirmations before polls."""
        follow.ticket = next(self._tickets)
        due = self._clock() + max(0.0, delay)
        heap = (self._bulk if bulk else self._cancels) if cancel else self._urgent if urgent else self._routine
        heapq.heappush(heap, (due, next(self._order), follow.ticket, follow))
        if heap[0][2] == follow.ticket:  # the new earliest: wake a runner that may be sleeping longer
            self._changed.set()

    def unschedule(self, follow: Pollable) -> None:
        follow.ticket = 0

    @property
    def scheduled(self) -> int:
        return sum(len(h) for h in self._heaps)

    def overdue(self, by: float = 1.0) -> int:
        """Entries due more than ``by`` seconds ago (a scan: called by the metrics scrape, not per poll)."""
        limit = self._clock() - by
        return sum(1 for heap in self._heaps for e in heap if e[0] < limit and e[2] == e[3].ticket)

    async def close(self) -> None:
        for task in [*self._runners, *self._cancel_tasks]:
            task.cancel()
        await asyncio.gather(*self._runners, *self._cancel_tasks, return_exceptions=True)

    async def _start_cancels(self, heap: list[_Entry], slots: asyncio.Semaphore) -> None:
        def done(task: asyncio.Task[None]) -> None:
            self._cancel_tasks.discard(task)
            slots.release()

        while True:
            await slots.acquire()
            follow = await self._next((heap,))
            task = asyncio.create_task(self._one(follow), name=f"cancel in {self.name}")
            self._cancel_tasks.add(task)
            task.add_done_callback(done)

    async def _run(self, heaps: tuple[list[_Entry], ...]) -> None:
        while True:
            await self._one(await self._next(heaps))

    async def _one(self, follow: Pollable) -> None:
        try:
            delay = await follow.poll()
        except Exception:  # a bug in one follow must not stop the account's polling
            log.exception("polling failed unexpectedly in %s", self.name)
            delay = None
        if delay is not None and follow.ticket == 0:
            self.schedule(follow, delay)

    async def _next(self, heaps: tuple[list[_Entry], ...]) -> Pollable:
        while True:
            now = self._clock()
            for heap in heaps:
                while heap and heap[0][2] != heap[0][3].ticket:  # rescheduled or unscheduled since
                    heapq.heappop(heap)
                if heap and heap[0][0] <= now:
                    _, _, _, follow = heapq.heappop(heap)
                    follow.ticket = 0  # taken: it reschedules itself from the poll's answer
                    return follow
            earliest = min((h[0][0] for h in heaps if h), default=None)
            self._changed.clear()
            timeout = None if earliest is None else max(0.0, earliest - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
