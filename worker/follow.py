"""Cancel one batch and follow it to a terminal state, reporting to every command that asked, durably.

One ``Follow`` exists per batch and commands partition in a process. Commands naming the same batch join it
instead of each cancelling and polling on their own: the provider sees one cancel and one poll stream however
many times a budget guard fires. Each subscriber still gets its own events (its ``command_id``, its own
``previous_status``) and exactly one final event, delivered through the ``publish`` callback.

Durability. After every change a follow hands its state (``FollowState``) to ``persist``, which writes it to
the follow-state topic; a waiting command's offset is released (may be committed) once a state naming it is
acknowledged, or once its final event is published, whichever comes first. While the cancel is not
answered, a command's entry (the follow's intent) waits for the answer, up to ``FollowPolicy.intent_delay``:
written before the answer, it would say only "not accepted yet", on which a new owner cancels again exactly
as it does for a redelivered command, so it saves nothing on a crash and costs a write per command. A
cancel waiting for the budget or a slow provider gets its intent written when the delay runs out, so
commits keep moving; a follow that ends before anything was written (the batch was already finished)
writes neither state nor tombstone.
A follow restored from that state on another worker (``Follow.restored``) does not cancel again when the
cancel was accepted, and tells each command only what it was not told yet. Writes are coalesced: while one
is in flight, later changes wait and go out together as the newest state, so a follow has at most one write
on the wire.

Order matters, and is what the crash windows in docs/durable-follows.md rest on: an event is published
before the state that says it was told, and the state is written before the tombstone; so a crash between
the two repeats the event (with the same ``event_id``), never loses it.

A follow is not a task. Its cancel runs once as a short task; between polls it is an entry in its
account's ``PollScheduler``, which calls ``poll`` when it is due and the account's budget allows. Polling is
adaptive: fast after a change (and right after the cancel, at confirmation priority), backing off
geometrically to ``max_interval`` while the batch sits in ``cancelling``. This module knows nothing of Kafka.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import context as otel_context

from worker import faults
from worker.budget import Priority
from worker.contract import (
    MAX_WAITING,
    BatchSnapshot,
    BatchStateEvent,
    BatchStatus,
    CancelCommand,
    FailureDetail,
    FollowState,
    Outcome,
    WaitingCommand,
    failure_event,
    observed_event,
)
from worker.errors import GaveUp, Rejected
from worker.telemetry import CommandContext

__all__ = [
    "Follow",
    "FollowPolicy",
    "Persist",
    "Publish",
    "StateWrites",
    "Subscriber",
    "next_interval",
]

log = logging.getLogger("worker.follow")


class Provider(Protocol):
    """What following needs from a provider client (``worker.providers.ProviderClient`` in production)."""

    async def cancel(self, account: str, batch_id: str) -> Any: ...
    async def retrieve(self, account: str, batch_id: str, *, priority: Priority = ...) -> BatchSnapshot: ...


class Writes(Protocol):
    """Who writes follows' states (``StateWrites``)."""

    def enqueue(self, follow: Follow) -> None: ...


class Scheduler(Protocol):
    """When polls happen (``worker.scheduler.PollScheduler``)."""

    def schedule(self, follow: Any, delay: float, *, urgent: bool = False, cancel: bool = False) -> None: ...
    def unschedule(self, follow: Any) -> None: ...


@dataclass(frozen=True)
class FollowPolicy:
    initial_interval: float = 1.0
    max_interval: float = 30.0
    backoff: float = 1.5
    max_follow: float = 24 * 3600.0
    #: A new follow's intent waits this long for the cancel's answer, so that the one state written says
    #: whether the cancel was accepted (0: write the intent at once). See "Durability" above.
    intent_delay: float = 1.0


def next_interval(current: float, changed: bool, policy: FollowPolicy) -> float:
    """Back to the fast interval after a change, otherwise a little slower, never above the cap."""
    if changed:
        return policy.initial_interval
    return min(current * policy.backoff, policy.max_interval)


def _noop() -> None:
    return None


@dataclass(eq=False, slots=True)
class Subscriber:
    """One command waiting on a batch: its own deadline (wall clock), last status told and final event.

    ``release`` is called once, when the command's offset may be committed: its intent is durable or its
    final event is published. ``on_final`` is called once with that final event (log line, metrics).
    Only the command's id and ``follow`` flag are kept: the batch is the follow's, and a process may hold
    100,000 of these.
    """

    command_id: str
    follow: bool = True
    context: CommandContext | None = None  # its trace context (the events continue it) and Kafka timestamp
    deadline: float = float("inf")  # Unix seconds
    last_status: BatchStatus | None = None
    release: Callable[[], None] = _noop
    on_final: Callable[[BatchStateEvent], None] | None = None
    in_record: bool = False  # counted in the follow-state record (at most MAX_WAITING are)
    durable: bool = False
    final: BatchStateEvent | None = None
    _released: bool = False

    @property
    def done(self) -> bool:
        return self.final is not None

    def release_once(self) -> None:
        if not self._released:
            self._released = True
            self.release()


Publish = Callable[[Subscriber, BatchStateEvent], Awaitable[None]]
#: Write the follow's state (``None``: a tombstone) to its partition; returns once it is durable.
Persist = Callable[[str, FollowState | None], Awaitable[None]]


def _utc(seconds: float) -> datetime | None:
    return None if seconds == float("inf") else datetime.fromtimestamp(seconds, UTC)


class Follow:
    """The single cancel + follow of one batch, broadcasting to its subscribers until none is left."""

    # A process holds up to 100,000 of these: no per-instance dict.
    __slots__ = (
        "_after",
        "_confirming",
        "_dirty",
        "_ended",
        "_intent_timer",
        "_interval",
        "_on_end",
        "_on_written",
        "_persist",
        "_policy",
        "_provider",
        "_publish",
        "_queued",
        "_recorded",
        "_scheduler",
        "_then",
        "_writes",
        "_writing",
        "account",
        "already_terminal",
        "batch_id",
        "busy",
        "cancel_accepted",
        "key",
        "last_status",
        "provider_name",
        "provider_status",
        "since",
        "stopping",
        "subscribers",
        "ticket",
    )

    def __init__(
        self,
        provider: Provider,
        command: CancelCommand,
        *,
        publish: Publish,
        persist: Persist,
        policy: FollowPolicy,
        scheduler: Scheduler,
        writes: Writes,
        after: Follow | None = None,
        on_end: Callable[[Follow], None] | None = None,
    ) -> None:
        self._provider = provider
        self.provider_name = command.provider
        self.account = command.account
        self.batch_id = command.batch_id
        self.key = command.key
        self._publish = publish
        self._persist = persist
        self._policy = policy
        self.subscribers: list[Subscriber] = []
        self.last_status: BatchStatus | None = None
        self.provider_status: str | None = None
        self.cancel_accepted = False
        self.already_terminal = False
        self.since = time.time()
        self.stopping = False
        self.busy = False  # a cancel or a poll is on the wire
        self.ticket = 0  # the scheduler's
        self._scheduler = scheduler
        self._on_end = on_end
        self._interval = policy.initial_interval
        self._confirming = False
        self._writes = writes
        self._dirty = False
        self._queued = False
        self._writing = False
        self._after = after  # the previous follow of this key: its last write lands before our first
        self._then: Follow | None = None  # the next follow of this key, waiting for our last write
        self._on_written: Callable[[], None] | None = None
        self._ended = False
        self._recorded = False  # a record of this follow may be on the topic: its end needs a tombstone
        self._intent_timer: asyncio.TimerHandle | None = None

    # --- building ----------------------------------------------------------------------------------------
    @classmethod
    def restored(
        cls,
        provider: Provider,
        state: FollowState,
        *,
        publish: Publish,
        persist: Persist,
        policy: FollowPolicy,
        context_of: Callable[[WaitingCommand], CommandContext],
        cap: float,
        scheduler: Scheduler,
        writes: Writes,
        on_end: Callable[[Follow], None] | None = None,
    ) -> Follow:
        """A follow resumed from its last durable state on a new owner: its commands' offsets are committed."""
        first = CancelCommand(
            command_id=state.waiting[0].command_id,
            provider=state.provider,
            account=state.account,
            batch_id=state.batch_id,
        )
        follow = cls(
            provider,
            first,
            publish=publish,
            persist=persist,
            policy=policy,
            scheduler=scheduler,
            writes=writes,
            on_end=on_end,
        )
        follow.cancel_accepted = state.cancel_accepted
        follow.already_terminal = state.already_terminal
        follow.last_status = state.last_status
        follow.provider_status = state.provider_status
        follow.since = state.since.timestamp()
        follow._recorded = True
        for w in state.waiting:
            deadline = w.deadline.timestamp() if w.deadline else follow.since + cap
            sub = Subscriber(
                w.command_id,
                follow=w.follow,
                context=context_of(w),
                deadline=deadline,
                last_status=w.last_status,
                in_record=True,
                durable=True,
                _released=True,
            )
            follow.subscribers.append(sub)
        return follow

    # --- the durable state --------------------------------------------------------------------------------
    @property
    def live(self) -> list[Subscriber]:
        return [s for s in self.subscribers if not s.done]

    def state(self) -> FollowState | None:
        """The record for the follow-state topic, or ``None`` (tombstone) once nobody waits."""
        waiting = [self._waiting(s) for s in self.subscribers if s.in_record and not s.done]
        if not waiting:
            return None
        return FollowState(
            provider=self.provider_name,
            account=self.account,
            batch_id=self.batch_id,
            cancel_accepted=self.cancel_accepted,
            already_terminal=self.already_terminal,
            last_status=self.last_status,
            provider_status=self.provider_status,
            since=datetime.fromtimestamp(self.since, UTC),
            updated_at=datetime.now(UTC),
            waiting=waiting,
        )

    def _waiting(self, sub: Subscriber) -> WaitingCommand:
        traceparent, tracestate, received_at = sub.context.trace_fields() if sub.context else (None, None, None)
        return WaitingCommand(
            command_id=sub.command_id,
            deadline=_utc(sub.deadline),
            last_status=sub.last_status,
            follow=sub.follow,
            traceparent=traceparent,
            tracestate=tracestate,
            received_at=received_at,
        )

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
        delay = self._policy.intent_delay
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
            self._writes.enqueue(self)

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
            await self._persist(self.key, state)
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

    # --- subscribers --------------------------------------------------------------------------------------
    def join(self, sub: Subscriber) -> bool:
        """A command joins (True); a redelivered one (same ``command_id``) takes over its entry instead (False).

        A redelivery happens when a crash came after the state naming the command was written but before
        its offset was committed: the command is the same, so it must not get a second set of events.
        """
        for known in self.subscribers:
            if known.command_id == sub.command_id and not known.done:
                known.release = sub.release  # its offset is the redelivered record's now
                known._released = False
                if known.durable:
                    known.release_once()
                return False
        sub.in_record = sum(1 for s in self.subscribers if s.in_record and not s.done) < MAX_WAITING
        if not sub.in_record:
            log.warning(
                "%s has %d commands waiting; %s is followed but not recorded (committed at its final event)",
                self.key,
                MAX_WAITING,
                sub.command_id,
            )
        self.subscribers.append(sub)
        if self.cancel_accepted:
            self.changed()
            if not self.busy:  # a call on the wire reports to it; otherwise look now
                self._continue(0.0, urgent=True)
        else:
            self._intent_soon()
        return True

    def stop(self) -> None:
        """Handover or shutdown: the call on the wire finishes, nothing new starts; the next owner resumes."""
        self.stopping = True
        self._forget_intent()  # an unwritten intent's commands are redelivered to the next owner
        self._scheduler.unschedule(self)

    # --- the follow ---------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Still following and taking newcomers (not ended, not handed over)."""
        return not self._ended and not self.stopping

    def start(self) -> None:
        """Queue the cancel (ahead of every poll of the account), or, when a previous owner's was accepted,
        poll soon. A cancel waiting for the budget is a heap entry, not a task: 100,000 arriving at once
        cost no more than 100,000 follows."""
        if self.cancel_accepted:
            self._scheduler.schedule(self, self._policy.initial_interval, urgent=True)
        else:
            self._scheduler.schedule(self, 0.0, cancel=True)

    def _in_trace(self) -> contextvars.Token[otel_context.Context] | None:
        """Make the first waiting command's span current: the provider call's spans become its children."""
        context = self.subscribers[0].context if self.subscribers else None
        return otel_context.attach(context.otel) if context is not None else None

    async def _cancel(self) -> None:
        self.busy = True
        token = self._in_trace()
        try:
            result = await self._provider.cancel(self.account, self.batch_id)
            self.cancel_accepted = True
            self.already_terminal = bool(result.already_terminal)
            faults.reached("cancel_accepted")
            await self._observe(result.snapshot)
            self.changed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - see _failed: every waiting command gets a final answer
            await self._failed(exc)
        finally:
            self.busy = False
            if token is not None:
                otel_context.detach(token)
        self._continue(self._policy.initial_interval, urgent=True)

    async def poll(self) -> float | None:
        """One poll, for the scheduler: the seconds until the next one, or None when the follow is over."""
        if not self.active:
            return None
        if self.busy:  # a newcomer's urgent poll met one already on the wire: look again shortly
            return self._policy.initial_interval
        if not self.cancel_accepted:
            await self._cancel()  # schedules the confirming poll itself
            return None
        self.busy = True
        changed = False
        token = self._in_trace()
        try:
            await self._expire_subscribers()
            if self.live and not self.stopping:
                priority = Priority.CONFIRM if self._confirming else Priority.POLL
                snapshot = await self._provider.retrieve(self.account, self.batch_id, priority=priority)
                self._confirming = False
                changed = snapshot.status != self.last_status
                await self._observe(snapshot)
                if changed:
                    self.changed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - see _failed
            await self._failed(exc)
        finally:
            self.busy = False
            if token is not None:
                otel_context.detach(token)
        if self.stopping:
            return None
        if not self.live:
            self._end()
            return None
        self._interval = next_interval(self._interval, changed, self._policy)
        return self._until_next(self._interval)

    def _continue(self, delay: float, *, urgent: bool = False) -> None:
        """Poll in ``delay`` seconds; the adaptive interval starts again from the fast one."""
        if self.stopping:
            return
        if not self.live:
            self._end()
            return
        self._confirming = urgent
        self._interval = self._policy.initial_interval
        self._scheduler.schedule(self, self._until_next(delay), urgent=urgent)

    def _until_next(self, interval: float) -> float:
        """The interval, but no later than the nearest subscriber deadline."""
        nearest = min((s.deadline for s in self.live), default=float("inf"))
        return max(0.0, min(interval, nearest - time.time()))

    def _end(self) -> None:
        if self._ended or self.stopping:
            return
        self._ended = True
        self._scheduler.unschedule(self)
        self.changed()  # nobody waits any more: the tombstone
        if self._on_end is not None:
            self._on_end(self)

    async def _failed(self, exc: Exception) -> None:
        """A provider's final answer (refused, retries exhausted) or a bug ends every waiting command."""
        if isinstance(exc, Rejected):
            detail = FailureDetail(http_status=exc.http_status, code=exc.code, message=exc.message)
            await self._fail_all(Outcome.REJECTED, detail)
        elif isinstance(exc, GaveUp):
            detail = FailureDetail(http_status=None, code="retries_exhausted", message=exc.cause)
            await self._fail_all(Outcome.GAVE_UP, detail)
        else:
            log.error("following %s failed unexpectedly", self.batch_id, exc_info=exc)
            message = f"{type(exc).__name__}: {exc}"[:500]
            await self._fail_all(
                Outcome.GAVE_UP, FailureDetail(http_status=None, code="internal_error", message=message)
            )

    async def _observe(self, snapshot: BatchSnapshot) -> None:
        self.last_status = snapshot.status
        self.provider_status = snapshot.provider_status
        for sub in list(self.subscribers):
            if not sub.done:
                await self._report(sub, snapshot)

    async def _report(self, sub: Subscriber, snapshot: BatchSnapshot) -> None:
        """Publish to one subscriber what is new to it; finish it on a terminal state or when it did not follow.

        Reports need no lock: they happen only inside the follow's one call (``busy``), and joining is
        synchronous, so no two of them interleave.
        """
        final = snapshot.terminal or not sub.follow
        if sub.done or (snapshot.status == sub.last_status and not final):
            return
        event = observed_event(
            sub.command_id,
            self.provider_name,
            self.account,
            self.batch_id,
            snapshot,
            sub.last_status,
            final=final,
            already_terminal=self.already_terminal,
        )
        await self._publish(sub, event)
        sub.last_status = snapshot.status
        if final:
            self._finish(sub, event)
        elif sub.in_record:
            self.changed()  # what it was told is part of the state: a new owner must not tell it again
        faults.reached("event_published")

    def _finish(self, sub: Subscriber, event: BatchStateEvent) -> None:
        if sub.done:
            return
        sub.final = event
        self.subscribers.remove(sub)  # the next state leaves it out; a long follow keeps no finished commands
        sub.release_once()
        if sub.on_final is not None:
            sub.on_final(event)
        if sub.in_record:
            self.changed()
        faults.reached("final_published")

    async def _expire_subscribers(self) -> None:
        now = time.time()
        for sub in self.live:
            if now >= sub.deadline:
                status = sub.last_status.value if sub.last_status else "unknown"
                detail = FailureDetail(
                    http_status=None, code="follow_timeout", message=f"batch still {status} when following timed out"
                )
                await self._fail(sub, Outcome.GAVE_UP, detail)

    async def _fail_all(self, outcome: Outcome, detail: FailureDetail) -> None:
        while live := self.live:  # a command joining meanwhile gets the same answer
            for sub in live:
                await self._fail(sub, outcome, detail)

    async def _fail(self, sub: Subscriber, outcome: Outcome, detail: FailureDetail) -> None:
        if sub.done:
            return
        event = failure_event(
            command_id=sub.command_id,
            outcome=outcome,
            detail=detail,
            provider=self.provider_name,
            account=self.account,
            batch_id=self.batch_id,
            last_status=sub.last_status,
        )
        await self._publish(sub, event)
        self._finish(sub, event)


class StateWrites:
    """Writes follows' states through a bounded set of writers, in the order they changed.

    A follow that changed is queued once, however often it changes before its turn, and a writer writes
    its newest state then; so 100,000 follows changing at once (a burst of cancels accepted) are 100,000
    queue entries and ``writers`` writes on the wire, not 100,000 tasks each holding a record. An
    ``asyncio.Queue`` wakes one idle writer per entry (an Event would wake all of them for each).
    """

    def __init__(self, writers: int = 256) -> None:
        self._writers = writers
        self._queue: asyncio.Queue[Follow] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def enqueue(self, follow: Follow) -> None:
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
