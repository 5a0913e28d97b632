"""Cancel one batch and follow it to a terminal state, reporting to every command that asked.

One ``Follow`` exists per batch and commands partition in a process. Commands naming the same batch join it
instead of each cancelling and polling on their own: the provider sees one cancel and one poll stream however
many times a budget guard fires. Each subscriber still gets its own events (its ``command_id``, its own
``previous_status``) and exactly one final event, delivered through ``FollowServices.publish``.

A follow is durable: after every change it writes its state to the follow-state topic (``Durable``, its base
class in durable.py, which says when and in what order). A follow restored from that state on another worker
(``Follow.restored``) does not cancel again when the cancel was accepted, and tells each command only what it
was not told yet.

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
from collections.abc import Callable
from datetime import UTC, datetime

from opentelemetry import context as otel_context

from worker import faults
from worker.budget import Priority
from worker.contract import (
    MAX_WAITING,
    PARENT_METADATA_KEY,
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
from worker.follow.durable import Durable
from worker.follow.policy import next_interval, polls_within
from worker.follow.services import FollowServices
from worker.follow.subscriber import CommandHandle, Subscriber
from worker.telemetry import CommandContext, metrics

__all__ = ["Follow"]

log = logging.getLogger("worker.follow")


def _utc(seconds: float) -> datetime | None:
    return None if seconds == float("inf") else datetime.fromtimestamp(seconds, UTC)


class Follow(Durable):
    """The single cancel + follow of one batch, broadcasting to its subscribers until none is left."""

    # A process holds up to 100,000 of these: no per-instance dict (the write machine's slots are Durable's).
    __slots__ = (
        "_confirming",
        "_ended",
        "_interval",
        "_signal_at",
        "_waited_since",
        "account",
        "already_terminal",
        "batch_id",
        "bulk",
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

    def __init__(self, services: FollowServices, command: CancelCommand, *, after: Follow | None = None) -> None:
        super().__init__(services, after)
        self.provider_name = command.provider
        self.account = command.account
        self.batch_id = command.batch_id
        self.key = command.key
        # A selector's child: its cancel waits behind plain cancels (Priority.BULK) until a plain one joins.
        self.bulk = PARENT_METADATA_KEY in command.metadata
        self.subscribers: list[Subscriber] = []
        self.last_status: BatchStatus | None = None
        self.provider_status: str | None = None
        self.cancel_accepted = False
        self.already_terminal = False
        self.since = time.time()
        self.stopping = False
        self.busy = False  # a cancel or a poll is on the wire
        # The scheduler's, and only it writes it: which of its heap entries for this follow is current. 0 means
        # "no current entry" (never scheduled, taken by a runner, or unscheduled); a stopped follow is not
        # rescheduled because ``poll`` returns None for it.
        self.ticket = 0
        self._interval = services.policy.initial_interval
        self._confirming = False
        self._ended = False
        self._signal_at: float | None = None  # when the receiver verified a push not yet answered by a poll
        self._waited_since: float | None = None  # a push follow's routine wait began (polls saved are counted)

    # --- building ----------------------------------------------------------------------------------------
    @classmethod
    def restored(
        cls,
        services: FollowServices,
        state: FollowState,
        *,
        context_of: Callable[[WaitingCommand], CommandContext],
        handle: CommandHandle,
    ) -> Follow:
        """A follow resumed from its last durable state on a new owner: its commands' offsets are committed,
        so each gets ``handle`` (nothing to release; its final event still counted)."""
        first = CancelCommand(
            command_id=state.waiting[0].command_id,
            provider=state.provider,
            account=state.account,
            batch_id=state.batch_id,
        )
        follow = cls(services, first)
        follow.cancel_accepted = state.cancel_accepted
        follow.already_terminal = state.already_terminal
        follow.last_status = state.last_status
        follow.provider_status = state.provider_status
        follow.since = state.since.timestamp()
        follow._recorded = True
        cap = services.policy.max_follow
        for w in state.waiting:
            deadline = w.deadline.timestamp() if w.deadline else follow.since + cap
            sub = Subscriber(
                w.command_id,
                wants_follow=w.follow,
                context=context_of(w),
                deadline=deadline,
                last_status=w.last_status,
                handle=handle,
                in_record=True,
                durable=True,
                released=True,
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
            follow=sub.wants_follow,
            traceparent=traceparent,
            tracestate=tracestate,
            received_at=received_at,
        )

    # --- subscribers --------------------------------------------------------------------------------------
    def join(self, sub: Subscriber) -> bool:
        """A command joins (True); a redelivered one (same ``command_id``) takes over its entry instead (False).

        A redelivery happens when a crash came after the state naming the command was written but before
        its offset was committed: the command is the same, so it must not get a second set of events.
        """
        for known in self.subscribers:
            if known.command_id == sub.command_id and not known.done:
                known.redelivered(sub.handle)  # its offset is the redelivered record's now
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
        self._services.scheduler.unschedule(self)

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
            self._services.scheduler.schedule(self, self._services.policy.initial_interval, urgent=True)
        else:
            self._services.scheduler.schedule(self, 0.0, cancel=True, bulk=self.bulk)

    def promote(self) -> None:
        """A plain command joined a selector's child: its cancel, if not sent yet, goes at plain priority."""
        if not self.bulk:
            return
        self.bulk = False
        if not self.cancel_accepted and not self.busy and self.active:
            self._services.scheduler.schedule(self, 0.0, cancel=True)

    def signalled(self, received_at: float) -> None:
        """The provider pushed a change for this batch (docs/push.md): poll at once, at confirmation priority.

        A signal is never an outcome: the poll's answer is. Before the cancel is accepted there is nothing to do
        (its confirming poll comes right after it); during a poll on the wire, the signal waits for it to end and
        then polls again, since that answer may predate the change.
        """
        if self._signal_at is None:
            self._signal_at = received_at
        if self.cancel_accepted and not self.busy and self.active:
            self._continue(0.0, urgent=True)

    def _in_trace(self) -> contextvars.Token[otel_context.Context] | None:
        """Make the first waiting command's span current: the provider call's spans become its children."""
        context = self.subscribers[0].context if self.subscribers else None
        return otel_context.attach(context.otel) if context is not None else None

    async def _cancel(self) -> None:
        self.busy = True
        token = self._in_trace()
        try:
            priority = Priority.BULK if self.bulk else Priority.CANCEL
            result = await self._services.provider.cancel(self.account, self.batch_id, priority=priority)
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
        self._continue(self._services.policy.initial_interval, urgent=True)

    async def poll(self) -> float | None:
        """One poll, for the scheduler: the seconds until the next one, or None when the follow is over."""
        if not self.active:
            return None
        if self.busy:  # a newcomer's urgent poll met one already on the wire: look again shortly
            return self._services.policy.initial_interval
        if not self.cancel_accepted:
            await self._cancel()  # schedules the confirming poll itself
            return None
        self.busy = True
        changed = False
        signal_at, self._signal_at = self._signal_at, None
        self._count_saved()
        token = self._in_trace()
        try:
            await self._expire_subscribers()
            if self.live and not self.stopping:
                priority = Priority.CONFIRM if self._confirming and not self.bulk else Priority.POLL
                snapshot = await self._services.provider.retrieve(self.account, self.batch_id, priority=priority)
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
        if signal_at is not None:
            metrics.SIGNAL_POLL_SECONDS.observe(max(0.0, time.time() - signal_at))
        if not self.live:
            self._end()
            return None
        return self._next_poll(changed)

    def _next_poll(self, changed: bool) -> float | None:
        """After a routine poll: the adaptive interval, or, for a push follow, the safety interval."""
        policy = self._services.policy
        self._interval = next_interval(self._interval, changed, policy)
        if self._signal_at is not None:  # pushed while the poll was on the wire: its answer may be older
            self._continue(0.0, urgent=True)
            return None
        if policy.push_interval is None:
            return self._until_next(self._interval)
        self._waited_since = time.time()
        return self._until_next(policy.push_interval)

    def _count_saved(self) -> None:
        """A push follow's wait is over: the polls the plain schedule would have made meanwhile were saved."""
        if self._waited_since is None:
            return
        waited, self._waited_since = time.time() - self._waited_since, None
        saved = polls_within(waited, self._interval, self._services.policy) - 1  # less this poll itself
        if saved > 0:
            metrics.PUSH_POLLS_SAVED.labels(self.provider_name).inc(saved)

    def _continue(self, delay: float, *, urgent: bool = False) -> None:
        """Poll in ``delay`` seconds; the adaptive interval starts again from the fast one."""
        if self.stopping:
            return
        self._count_saved()  # a push follow's wait ends early: counted from the interval it had reached
        if not self.live:
            self._end()
            return
        self._confirming = urgent
        self._interval = self._services.policy.initial_interval
        self._services.scheduler.schedule(self, self._until_next(delay), urgent=urgent)

    def _until_next(self, interval: float) -> float:
        """The interval, but no later than the nearest subscriber deadline."""
        nearest = min((s.deadline for s in self.live), default=float("inf"))
        return max(0.0, min(interval, nearest - time.time()))

    def _end(self) -> None:
        if self._ended or self.stopping:
            return
        self._ended = True
        self._services.scheduler.unschedule(self)
        self.changed()  # nobody waits any more: the tombstone
        if self._services.owner is not None:
            self._services.owner.ended(self)

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
        final = snapshot.terminal or not sub.wants_follow
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
        await self._services.publish(sub, event)
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
        if self._services.owner is not None:
            self._services.owner.finished(sub, event)
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
        await self._services.publish(sub, event)
        self._finish(sub, event)
