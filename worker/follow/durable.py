"""A follow's durable state: when it is written, in what order, and what a write releases.

Durability. After every change a follow hands its state (``FollowState``) to ``persist``, which writes it to
the follow-state topic; a waiting command's offset is released (may be committed) once a state naming it is
acknowledged, or once its final event is published, whichever comes first. While the cancel is not
answered, a command's entry (the follow's intent) waits for the answer, up to ``FollowPolicy.intent_delay``:
written before the answer, it would say only "not accepted yet", on which a new owner cancels again exactly
as it does for a redelivered command, so it saves nothing on a crash and costs a write per command. A
cancel waiting for the budget or a slow provider gets its intent written when the delay runs out, so
commits keep moving; a follow that ends before anything was written (the batch was already finished)
writes neither state nor tombstone.
Writes are coalesced: while one is in flight, later changes wait and go out together as the newest state,
so a follow has at most one write on the wire; a new follow of a key writes its first record only once the
previous follow of that key has written its last (its tombstone), so the topic's last word for a key is
always the newest follow's.

Order matters, and is what the crash windows in docs/durable-follows.md rest on: an event is published
before the state that says it was told, and the state is written before the tombstone; so a crash between
the two repeats the event (with the same ``event_id``), never loses it.

``Durable`` is the write machine, a slotted base class of ``Follow`` rather than an object of its own: a
process holds up to 100,000 follows, and a second object each would cost memory for nothing.
``StateWrites`` runs the writes of every follow through a bounded set of writers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable

from worker import faults
from worker.contract import FollowState
from worker.follow.services import FollowServices
from worker.follow.subscriber import Subscriber

__all__ = ["Durable", "StateWrites"]

log = logging.getLogger("worker.follow")


class Durable:
    """One follow's write machine: ``changed`` → queued once → ``write_once`` → released, in order per key.

    A subclass provides ``key``, ``subscribers``, ``active`` and ``state()`` (``Follow``).
    """

    __slots__ = (
        "_after",
        "_dirty",
        "_intent_timer",
        "_on_written",
        "_queued",
        "_recorded",
        "_services",
        "_then",
        "_writing",
    )

    key: str
    subscribers: list[Subscriber]

    def __init__(self, services: FollowServices, after: Durable | None = None) -> None:
        self._services = services
        self._dirty = False  # changed since the last write was built
        self._queued = False  # in ``StateWrites``' queue
        self._writing = False  # a write is on the wire
        self._recorded = False  # a record of this follow may be on the topic: its end needs a tombstone
        self._after = after  # the previous follow of this key: its last write lands before our first
        self._then: Durable | None = None  # the next follow of this key, waiting for our last write
        self._on_written: Callable[[], None] | None = None
        self._intent_timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        raise NotImplementedError

    def state(self) -> FollowState | None:
        raise NotImplementedError

    def changed(self) -> None:
        """Something a new owner needs changed: write the newest state soon (one write in flight at most)."""
        self._forget_intent()
        self._dirty = True
        self._queue_write()

    def _intent_soon(self) -> None:
        """A subscriber of a follow whose cancel is not answered yet: write it with the answer, or when
        ``intent_delay`` runs out, whichever comes first.

        A write already queued, or one owed after the write on the wire (``_dirty``), will include it. A write
        on the wire does not (it was built before this subscriber came): that case needs the timer too.
        """
        delay = self._services.policy.intent_delay
        if delay <= 0:
            self.changed()
        elif self._intent_timer is None and not self._dirty and not self._queued:
            # A fresh context: the timer would otherwise carry this command's trace into the write for a second.
            self._intent_timer = asyncio.get_running_loop().call_later(
                delay, self._intent_due, context=contextvars.Context()
            )

    def _intent_due(self) -> None:
        self._intent_timer = None
        if self.active:
            self.changed()

    def _forget_intent(self) -> None:
        if self._intent_timer is not None:
            self._intent_timer.cancel()
            self._intent_timer = None

    @property
    def pending_write(self) -> bool:
        return self._dirty or self._queued or self._writing

    def when_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once nothing is left to write (at once if nothing is)."""
        if self.pending_write:
            self._on_written = callback
        else:
            callback()

    def _queue_write(self) -> None:
        if not self._queued and not self._writing:
            self._queued = True
            self._services.writes.enqueue(self)

    async def write_once(self) -> None:
        """Write the newest state (called by ``StateWrites``); requeue if it changed meanwhile."""
        self._queued = False
        after = self._after
        if after is not None:
            if after.pending_write:  # the tombstone of this key's previous follow lands before our first record
                after._then = self
                return
            self._after = None
        if not self._dirty:
            self._written()
            return
        self._dirty = False
        state = self.state()
        if state is None and not self._recorded:  # nothing of this follow was ever written: no tombstone
            self._written()
            return
        self._writing = True
        self._recorded = True  # before the write: a write that fails may still have landed
        included = [s for s in self.subscribers if s.in_record and not s.done and not s.durable]
        try:
            await self._services.persist(self.key, state)
        finally:
            self._writing = False
        faults.reached("state_written")
        for sub in included:
            sub.durable = True
            sub.release_once()
        if self._dirty:
            self._queue_write()
        else:
            self._written()

    def _written(self) -> None:
        follower, self._then = self._then, None
        if follower is not None:
            follower._queue_write()
        callback, self._on_written = self._on_written, None
        if callback is not None:
            callback()


class StateWrites:
    """Writes follows' states through a bounded set of writers, in the order they changed.

    A follow that changed is queued once, however often it changes before its turn, and a writer writes
    its newest state then; so 100,000 follows changing at once (a burst of cancels accepted) are 100,000
    queue entries and ``writers`` writes on the wire, not 100,000 tasks each holding a record. An
    ``asyncio.Queue`` wakes one idle writer per entry (an Event would wake all of them for each).
    """

    def __init__(self, writers: int = 256) -> None:
        self._writers = writers
        self._queue: asyncio.Queue[Durable] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def enqueue(self, follow: Durable) -> None:
        if not self._tasks:
            # A fresh context: the first enqueue happens while a command is taken in (see scheduler.py).
            self._tasks = [
                asyncio.create_task(self._run(), name=f"state writer #{i}", context=contextvars.Context())
                for i in range(self._writers)
            ]
        self._queue.put_nowait(follow)

    async def _run(self) -> None:
        while True:
            follow = await self._queue.get()
            try:
                await follow.write_once()
            except Exception:  # a bug in one write must not stop the others; that follow restarts on a move
                log.exception("writing the state of %s failed", follow.key)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
