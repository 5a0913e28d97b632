"""Every follow this process keeps, by commands partition: join, resume, hand over, close.

``Follows`` is the ``FollowOwner`` the consumer drives (kafka/seams.py): when a partition is assigned it
resumes the follows the previous owner left (``resume``), when it moves or the worker stops it stops them
(``stop_partitions``, ``close``). Intake (dispatch.py) hands it each valid command (``join``). It owns what
follows share: one ``PollScheduler`` per provider account, the ``StateWrites`` pool, and one
``FollowServices`` per (partition, provider, account), through which its follows publish, persist and
report back. Follows belong to a commands partition because their follow-state records live in the same
partition number of the follows topic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from worker.contract import (
    PARENT_METADATA_KEY,
    BatchSignal,
    BatchStateEvent,
    CancelCommand,
    FollowState,
    WaitingCommand,
)
from worker.follow.durable import StateWrites
from worker.follow.follow import Follow
from worker.follow.policy import FollowPolicy
from worker.follow.scheduler import PollScheduler
from worker.follow.services import FollowServices, Persist, Provider
from worker.follow.subscriber import CommandHandle, Subscriber
from worker.telemetry import CommandContext, CommandTracing, metrics

__all__ = ["EventSink", "Follows", "StateSink"]

log = logging.getLogger("worker.follow")


class EventSink(Protocol):
    """Where state events go (``worker.kafka.producer.EventProducer``): returns once the broker has the record."""

    async def publish(self, event: BatchStateEvent, context: CommandContext | None) -> None: ...


class StateSink(Protocol):
    """Where follow states go (``worker.kafka.follow_store.FollowStore``): durable when ``write`` returns."""

    async def write(self, partition: int, key: str, state: FollowState | None) -> None: ...


FollowKey = tuple[int, str]  # (commands partition, batch key)


class Follows:
    """The registry of follows: one per (partition, batch), each started, resumed and stopped here."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        accounts: Mapping[str, frozenset[str]],
        events: EventSink,
        states: StateSink,
        policy: FollowPolicy,
        *,
        tracing: CommandTracing | None = None,
        runners_for: Callable[[str, str], int] | None = None,
        push_intervals: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        self._providers = providers
        self._accounts = accounts
        self._events = events
        self._states = states
        self.policy = policy
        self._tracing = tracing or CommandTracing(group_id="")
        self._follows: dict[FollowKey, Follow] = {}
        self._schedulers: dict[tuple[str, str], PollScheduler] = {}
        self._partition_of: dict[Follow, int] = {}
        self._services: dict[tuple[int, str, str], FollowServices] = {}
        self._resumed: dict[int, CommandHandle] = {}
        self._writes = StateWrites()
        self._runners_for = runners_for or (lambda provider, account: 16)
        self._push_intervals = push_intervals or {}
        self.waiting = 0  # commands joined (or resumed) whose final event is not yet published

    # --- what the consumer and the metrics read -------------------------------------------------------------
    @property
    def following(self) -> int:
        return len(self._follows)

    def oldest_follow_age(self) -> float:
        return max((time.time() - f.since for f in self._follows.values()), default=0.0)

    def schedulers(self) -> Mapping[tuple[str, str], PollScheduler]:
        return self._schedulers

    # --- taking commands ------------------------------------------------------------------------------------
    def join(self, partition: int, command: CancelCommand, sub: Subscriber) -> bool:
        """``sub`` (the command) joins its batch's follow in ``partition``, starting one if none is active;
        False when the follow already had this command (a redelivery): then it is not followed twice."""
        follow = self._follow_for(partition, command)
        if follow.bulk and PARENT_METADATA_KEY not in command.metadata:
            follow.promote()  # someone waits on this batch by name: its cancel is no longer bulk
        joined = follow.join(sub)
        if joined:
            self.waiting += 1
        return joined

    def resume(self, partition: int, states: Iterable[FollowState]) -> int:
        """Start the follows a previous owner of ``partition`` left; returns how many."""
        count = 0
        handle = self._resumed.get(partition)
        if handle is None:
            handle = self._resumed[partition] = CommandHandle(None, resumed_in=partition)
        for state in states:
            if state.provider not in self._providers or state.account not in self._accounts.get(
                state.provider, frozenset()
            ):
                log.error(
                    "cannot resume %s: provider or account no longer configured; its commands stay unanswered",
                    state.key,
                )
                continue
            services = self._services_for(partition, state.provider, state.account)
            follow = Follow.restored(services, state, context_of=self._resumed_context, handle=handle)
            self.waiting += len(follow.subscribers)
            self._adopt(partition, follow)
            count += 1
        metrics.FOLLOWS_RESTORED.inc(count)
        return count

    def _resumed_context(self, waiting: WaitingCommand) -> CommandContext:
        return self._tracing.resumed_context(waiting.traceparent, waiting.tracestate, waiting.received_at)

    # --- pushes ----------------------------------------------------------------------------------------------
    def signal(self, signal: BatchSignal) -> bool:
        """A provider pushed a change of ``signal``'s batch: the follows of it this process holds poll at once.
        False when none is held here (another worker's, or over); every worker reads every signal."""
        held = False
        for partition, provider, account in list(self._services):
            if provider == signal.provider and account == signal.account:
                follow = self._follows.get((partition, signal.key))
                if follow is not None and follow.active:
                    follow.signalled(signal.received_at.timestamp())
                    held = True
        metrics.SIGNALS.labels(signal.provider, "polled" if held else "not_held").inc()
        return held

    # --- handover and shutdown ------------------------------------------------------------------------------
    async def stop_partitions(self, partitions: Sequence[int], grace: float) -> None:
        """Revocation or shutdown: let calls on the wire finish (up to ``grace``), write what is owed, stop.

        Nothing is marked done that is not: a command whose intent is not durable keeps its offset
        uncommitted and is redelivered; one whose intent is durable is resumed by the next owner.
        """
        wanted = set(partitions)
        follows = [(k, f) for k, f in self._follows.items() if k[0] in wanted]
        for _, f in follows:
            f.stop()
        deadline = time.monotonic() + grace
        # The calls on the wire finish and report what they saw. A bounded wait on flags rather than an Event
        # per follow: a process holds up to 100,000 follows, and this runs once per handover.
        while any(f.busy for _, f in follows) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        writes_until = max(deadline, time.monotonic() + 0.5)  # what is owed gets half a second at least
        while any(f.pending_write for _, f in follows) and time.monotonic() < writes_until:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        late = sum(1 for _, f in follows if f.pending_write)
        if late:
            log.warning("%d follow-state writes unfinished at handover; those follows restart from older states", late)
        for key, f in follows:
            self.waiting -= len(f.live)
            self._partition_of.pop(f, None)
            if self._follows.get(key) is f:
                del self._follows[key]

    async def close(self, grace: float = 0.0) -> None:
        await self.stop_partitions(sorted({p for p, _ in self._follows}), grace)
        schedulers, self._schedulers = list(self._schedulers.values()), {}
        self._services = {}  # they name the closed schedulers
        await asyncio.gather(*(s.close() for s in schedulers))
        await self._writes.close()

    # --- what follows report back (``Owner``) ---------------------------------------------------------------
    def finished(self, sub: Subscriber, event: BatchStateEvent) -> None:
        """A command's final event is published: count it (``CommandHandle.finished``), one fewer waiting."""
        sub.handle.finished(event, sub.context)
        self.waiting -= 1

    def ended(self, follow: Follow) -> None:
        """A follow is over: forget it once its tombstone is written (a newcomer's first record waits for it)."""
        partition = self._partition_of.pop(follow, None)
        if partition is None:
            return
        key = (partition, follow.key)

        def forget() -> None:
            if self._follows.get(key) is follow:
                del self._follows[key]

        follow.when_written(forget)

    async def _publish(self, sub: Subscriber, event: BatchStateEvent) -> None:
        ctx = sub.context
        await self._events.publish(event, ctx)
        if ctx is not None and ctx.first_event_at is None:
            ctx.first_event_at = time.time()
            metrics.CANCEL_ACCEPTED_SECONDS.observe(max(0.0, ctx.first_event_at - ctx.produced_at))

    # --- building -------------------------------------------------------------------------------------------
    def _follow_for(self, partition: int, command: CancelCommand) -> Follow:
        key = (partition, command.key)
        current = self._follows.get(key)
        if current is not None and current.active:
            return current
        services = self._services_for(partition, command.provider, command.account)
        follow = Follow(services, command, after=current if current is not None and current.pending_write else None)
        self._adopt(partition, follow)
        return follow

    def _adopt(self, partition: int, follow: Follow) -> None:
        self._follows[partition, follow.key] = follow
        self._partition_of[follow] = partition
        follow.start()

    def _services_for(self, partition: int, provider: str, account: str) -> FollowServices:
        """One set of collaborators per (partition, provider, account), shared by its follows."""
        services = self._services.get((partition, provider, account))
        if services is None:
            services = self._services[partition, provider, account] = FollowServices(
                provider=self._providers[provider],
                publish=self._publish,
                persist=self._persist_to(partition),
                policy=self._policy_for(provider, account),
                scheduler=self._scheduler_for(provider, account),
                writes=self._writes,
                owner=self,
            )
        return services

    def _policy_for(self, provider: str, account: str) -> FollowPolicy:
        """The shared policy, with the account's push safety interval when its provider pushes."""
        interval = self._push_intervals.get((provider, account))
        return self.policy if interval is None else dataclasses.replace(self.policy, push_interval=interval)

    def _scheduler_for(self, provider: str, account: str) -> PollScheduler:
        scheduler = self._schedulers.get((provider, account))
        if scheduler is None:
            runners = self._runners_for(provider, account)
            scheduler = self._schedulers[provider, account] = PollScheduler(f"{provider}/{account}", runners)
        return scheduler

    def _persist_to(self, partition: int) -> Persist:
        """One writer function per partition, shared by its follows' services."""
        states = self._states

        async def persist(key: str, state: FollowState | None) -> None:
            await states.write(partition, key, state)

        return persist
