"""From a consumed record to a follow: decode, authorise, join the batch's follow, release the offset.

The consumer hands every record to ``Dispatcher.submit`` and goes straight back to polling; nothing here
blocks the poll loop. A command's short task decodes and authorises it (anything wrong goes to the
dead-letter topic, plus a final ``invalid`` event when its ``command_id`` could be read), then joins the one
``Follow`` of its batch in its partition and ends. The follow releases the record's offset in its
partition's offsets (``Done``) once the command's intent is durable on the follow-state topic or its
final event is published, whichever comes first; the commit loop does the rest.

Follows belong to a commands partition: its follow-state records live in the same partition number of the
follows topic, and when the partition moves, its follows stop here (``stop_partitions``) and resume on the
new owner (``resume``) from what was written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import context as otel_context

from worker import metrics
from worker.contract import (
    BatchStateEvent,
    CancelCommand,
    Command,
    DeadLetterReason,
    FailureDetail,
    FollowState,
    InvalidCommand,
    LiftCommand,
    Outcome,
    SelectorCommand,
    WaitingCommand,
    decode_any,
    failure_event,
)
from worker.follow import Follow, FollowPolicy, Persist, Provider, StateWrites, Subscriber
from worker.record import Done, Record
from worker.scheduler import PollScheduler
from worker.signing import SignatureVerifier
from worker.telemetry import CommandContext, CommandTracing

__all__ = ["Dispatcher", "EventSink", "Record", "StateSink"]

log = logging.getLogger("worker.dispatch")


class EventSink(Protocol):
    """Where outcomes go; both calls return only once the broker has the record (or raise CancelledError)."""

    async def publish(self, event: BatchStateEvent, context: CommandContext | None) -> None: ...
    async def dead_letter(
        self, record: Record, reason: DeadLetterReason, message: str, context: CommandContext | None
    ) -> None: ...


class StateSink(Protocol):
    """Where follow states go (``worker.kafka.follow_store.FollowStore``): durable when ``write`` returns."""

    async def write(self, partition: int, key: str, state: FollowState | None) -> None: ...


def _command_id(record: Record) -> str | None:
    """The command id of a record already known to decode, for the event that accompanies its dead letter."""
    try:
        return decode_any(record.value, max_bytes=1 << 30).command_id
    except Exception:  # noqa: BLE001 - best effort, for the event only
        return None


FollowKey = tuple[int, str]  # (commands partition, batch key)


class SelectorTaker(Protocol):
    """``worker.sweep.Selectors`` as intake sees it."""

    def check(self, command: SelectorCommand | LiftCommand) -> None: ...
    def take(self, record: Record, offsets: Done, command: SelectorCommand | LiftCommand, context: Any) -> None: ...


def _partial(command: Command) -> dict[str, str]:
    """What an ``invalid`` event may echo of a command that decoded but cannot be taken."""
    fields = {"provider": command.provider, "account": command.account}
    return fields | ({"batch_id": command.batch_id} if isinstance(command, CancelCommand) else {})


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        accounts: Mapping[str, frozenset[str]],
        sink: EventSink,
        states: StateSink,
        policy: FollowPolicy,
        *,
        max_command_bytes: int,
        tracing: CommandTracing | None = None,
        verifier: SignatureVerifier | None = None,
        runners_for: Callable[[str, str], int] | None = None,
        selectors: SelectorTaker | None = None,
    ) -> None:
        self._providers = providers
        self._accounts = accounts
        self._sink = sink
        self._states = states
        self._policy = policy
        self._max_bytes = max_command_bytes
        self._tracing = tracing or CommandTracing(group_id="")
        self._verifier = verifier
        self._tasks: dict[int, set[asyncio.Task[None]]] = {}
        self._follows: dict[FollowKey, Follow] = {}
        self._schedulers: dict[tuple[str, str], PollScheduler] = {}
        self._partition_of: dict[Follow, int] = {}
        self._persists: dict[int, Persist] = {}
        self._writes = StateWrites()
        self._runners_for = runners_for or (lambda provider, account: 16)
        self._waiting = 0
        self._selectors = selectors

    # --- what the consumer and the metrics read -------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Commands taken in whose final event is not yet published (back-pressure counts these)."""
        return self._waiting + self.intake

    @property
    def intake(self) -> int:
        """Records handed over and not yet done with: only those being dead-lettered, because a valid command
        is decoded and joined to its follow within ``submit``."""
        return sum(len(t) for t in self._tasks.values())

    @property
    def following(self) -> int:
        return len(self._follows)

    def oldest_follow_age(self) -> float:
        return max((time.time() - f.since for f in self._follows.values()), default=0.0)

    # --- intake ---------------------------------------------------------------------------------------------
    def submit(self, record: Record, offsets: Done) -> None:
        """Decode, authorise and join a record's follow now; only a record going to the DLQ gets a task.

        The poll loop calls this for every record, so the common path allocates no task and awaits nothing:
        a valid command is a subscriber of its batch's follow when this returns.
        """
        context = self._tracing.command_context(record)
        token = otel_context.attach(context.otel)  # log lines, and the DLQ task's context, carry the trace ids
        try:
            try:
                command = self._decode(record)
                if not isinstance(command, CancelCommand):
                    self._hand_over(record, offsets, command, context)
                    return
                if context.span.is_recording():
                    context.span.set_attributes(
                        {
                            "bcw.command_id": command.command_id,
                            "bcw.provider": command.provider,
                            "bcw.account": command.account,
                            "bcw.batch_id": command.batch_id,
                        }
                    )
                self._join(record, offsets, command, context)
                return
            except InvalidCommand as exc:
                context.span.set_attribute("bcw.outcome", Outcome.INVALID.value)
                rejecting = self._invalid(record, offsets, exc, context)
            except Exception as exc:  # a bug must park one record, never stall its partition's watermark
                where = f"{record.topic}@{record.partition}:{record.offset}"
                log.exception("internal error on %s; dead-lettering it", where)
                rejecting = self._park(record, offsets, exc, context)
            task = asyncio.create_task(rejecting, name=f"dead letter {record.partition}@{record.offset}")
        finally:
            otel_context.detach(token)
        tasks = self._tasks.setdefault(record.partition, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def resume(self, partition: int, states: Iterable[FollowState]) -> int:
        """Start the follows a previous owner of ``partition`` left; returns how many."""
        count = 0
        for state in states:
            provider = self._providers.get(state.provider)
            if provider is None or state.account not in self._accounts.get(state.provider, frozenset()):
                log.error(
                    "cannot resume %s: provider or account no longer configured; its commands stay unanswered",
                    state.key,
                )
                continue
            follow = Follow.restored(
                provider,
                state,
                publish=self._publish,
                persist=self._persist_to(partition),
                policy=self._policy,
                context_of=self._resumed_context,
                cap=self._policy.max_follow,
                scheduler=self._scheduler_for(state.provider, state.account),
                writes=self._writes,
                on_end=self._ended,
            )
            for sub in follow.subscribers:
                self._track(sub, partition, state.batch_id)
            self._adopt(partition, follow)
            count += 1
        metrics.FOLLOWS_RESTORED.inc(count)
        return count

    def _resumed_context(self, waiting: WaitingCommand) -> CommandContext:
        return self._tracing.resumed_context(waiting.traceparent, waiting.tracestate, waiting.received_at)

    # --- handover and shutdown ------------------------------------------------------------------------------
    async def stop_partitions(self, partitions: Sequence[int], grace: float) -> None:
        """Revocation or shutdown: let calls on the wire finish (up to ``grace``), write what is owed, stop.

        Nothing is marked done that is not: a command whose intent is not durable keeps its offset
        uncommitted and is redelivered; one whose intent is durable is resumed by the next owner.
        """
        wanted = set(partitions)
        intake = [t for p in wanted for t in self._tasks.pop(p, set())]
        for t in intake:
            t.cancel()
        follows = [(k, f) for k, f in self._follows.items() if k[0] in wanted]
        for _, f in follows:
            f.stop()
        deadline = time.monotonic() + grace
        # The calls on the wire finish and report what they saw. A bounded wait on flags rather than an Event
        # per follow: a process holds up to 100,000 follows, and this runs once per handover.
        while any(f.busy for _, f in follows) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.gather(*intake, return_exceptions=True)
        writes_until = max(deadline, time.monotonic() + 0.5)  # what is owed gets half a second at least
        while any(f.pending_write for _, f in follows) and time.monotonic() < writes_until:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        late = sum(1 for _, f in follows if f.pending_write)
        if late:
            log.warning("%d follow-state writes unfinished at handover; those follows restart from older states", late)
        for key, f in follows:
            self._waiting -= len(f.live)
            self._partition_of.pop(f, None)
            if self._follows.get(key) is f:
                del self._follows[key]

    async def close(self, grace: float = 0.0) -> None:
        partitions = {p for p, _ in self._follows} | set(self._tasks)
        await self.stop_partitions(sorted(partitions), grace)
        schedulers, self._schedulers = list(self._schedulers.values()), {}
        await asyncio.gather(*(s.close() for s in schedulers))
        await self._writes.close()

    # --- one command ----------------------------------------------------------------------------------------
    async def _invalid(self, record: Record, offsets: Done, exc: InvalidCommand, context: CommandContext) -> None:
        await self._reject(record, exc, context)
        self._finished(record, offsets, Outcome.INVALID, context)

    def _finished(self, record: Record, offsets: Done, outcome: Outcome, context: CommandContext) -> None:
        metrics.COMMANDS.labels(outcome.value).inc()
        metrics.COMMAND_FINAL_SECONDS.observe(max(0.0, time.time() - context.produced_at))
        context.span.end()
        if not offsets.revoked:
            offsets.finished(record.offset)

    def _join(self, record: Record, offsets: Done, command: CancelCommand, context: CommandContext) -> None:
        limit = min(command.follow_timeout_s or float("inf"), self._policy.max_follow)
        offset = record.offset  # the closure keeps the offset, not the record (its bytes and headers)

        def release() -> None:
            if not offsets.revoked:
                offsets.finished(offset)

        command_id, provider, account, batch_id = (
            command.command_id,
            command.provider,
            command.account,
            command.batch_id,
        )  # the closure keeps these strings, not the whole command

        def on_final(event: BatchStateEvent) -> None:
            outcome = self._final(event, context)
            context.span.set_attribute("bcw.outcome", outcome.value)
            context.span.end()
            log.info(
                "command finished: %s",
                outcome.value,
                extra={
                    "command_id": command_id,
                    "provider": provider,
                    "account": account,
                    "batch_id": batch_id,
                    "status": event.status.value if event.status else None,
                    **context.log_ids,  # the line is written in the follow's context, not this command's
                },
            )

        sub = Subscriber(
            command.command_id,
            follow=command.follow,
            context=context,
            deadline=time.time() + limit,
            release=release,
            on_final=on_final,
        )
        follow = self._follow_for(record.partition, command)
        if follow.join(sub):
            self._waiting += 1
        else:  # a redelivery of a command the follow already has (restored): it keeps its original span
            log.info("command %s is already being followed; not following it twice", command.command_id)
            context.span.end()

    def _final(self, event: BatchStateEvent, context: CommandContext | None) -> Outcome:
        """What every final event of a followed command counts: its outcome, its latency, one fewer waiting."""
        outcome = event.outcome
        if outcome is None:  # the contract's validator makes every final event carry one
            raise ValueError(f"event {event.event_id} is final without an outcome")
        self._waiting -= 1
        metrics.COMMANDS.labels(outcome.value).inc()
        if context is not None:
            metrics.COMMAND_FINAL_SECONDS.observe(max(0.0, time.time() - context.produced_at))
        return outcome

    def _track(self, sub: Subscriber, partition: int, batch_id: str) -> None:
        """Metrics and the log line for a resumed command's final event."""
        self._waiting += 1
        context = sub.context
        command_id = sub.command_id

        def on_final(event: BatchStateEvent) -> None:
            outcome = self._final(event, context)
            log.info(
                "command finished: %s (resumed)",
                outcome.value,
                extra={
                    "command_id": command_id,
                    "batch_id": batch_id,
                    "partition": partition,
                    **(context.log_ids if context is not None else {}),
                },
            )

        sub.on_final = on_final

    def _follow_for(self, partition: int, command: CancelCommand) -> Follow:
        key = (partition, command.key)
        current = self._follows.get(key)
        if current is not None and current.active:
            return current
        follow = Follow(
            self._providers[command.provider],
            command,
            publish=self._publish,
            persist=self._persist_to(partition),
            policy=self._policy,
            scheduler=self._scheduler_for(command.provider, command.account),
            writes=self._writes,
            after=current if current is not None and current.pending_write else None,
            on_end=self._ended,
        )
        self._adopt(partition, follow)
        return follow

    def _scheduler_for(self, provider: str, account: str) -> PollScheduler:
        scheduler = self._schedulers.get((provider, account))
        if scheduler is None:
            runners = self._runners_for(provider, account)
            scheduler = self._schedulers[provider, account] = PollScheduler(f"{provider}/{account}", runners)
        return scheduler

    def schedulers(self) -> Mapping[tuple[str, str], PollScheduler]:
        return self._schedulers

    def _adopt(self, partition: int, follow: Follow) -> None:
        self._follows[partition, follow.key] = follow
        self._partition_of[follow] = partition
        follow.start()

    def _ended(self, follow: Follow) -> None:
        """A follow is over: forget it once its tombstone is written (a newcomer's first record waits for it)."""
        partition = self._partition_of.pop(follow, None)
        if partition is None:
            return
        key = (partition, follow.key)

        def forget() -> None:
            if self._follows.get(key) is follow:
                del self._follows[key]

        follow.when_written(forget)

    def _persist_to(self, partition: int) -> Persist:
        """One writer function per partition, shared by its follows."""
        persist = self._persists.get(partition)
        if persist is None:
            states = self._states

            async def persist(key: str, state: FollowState | None) -> None:
                await states.write(partition, key, state)

            self._persists[partition] = persist
        return persist

    async def _publish(self, sub: Subscriber, event: BatchStateEvent) -> None:
        ctx = sub.context
        await self._sink.publish(event, ctx)
        if ctx is not None and ctx.first_event_at is None:
            ctx.first_event_at = time.time()
            metrics.CANCEL_ACCEPTED_SECONDS.observe(max(0.0, ctx.first_event_at - ctx.produced_at))

    # --- invalid input --------------------------------------------------------------------------------------
    async def _park(self, record: Record, offsets: Done, error: Exception, context: CommandContext) -> None:
        """Dead-letter a record the worker failed on (``internal_error``), so its partition moves on.

        The exception went to the log with its traceback; the dead letter names only its type, because an
        exception message can carry anything. If even that fails, the record is logged and left behind:
        a partition stalled forever would stop every later command in it.
        """
        exc = InvalidCommand(
            DeadLetterReason.INTERNAL_ERROR,
            f"the worker failed on this record ({type(error).__name__}); see its logs, fix, then replay",
            command_id=_command_id(record),
        )
        try:
            await self._reject(record, exc, context)
        except Exception:
            log.exception(
                "could not dead-letter %s@%d:%d either; skipping it", record.topic, record.partition, record.offset
            )
        self._finished(record, offsets, Outcome.INVALID, context)

    def _hand_over(self, record: Record, offsets: Done, command: SelectorCommand | LiftCommand, context: Any) -> None:
        """A selector or lift: refused here like any command when its provider or the clock cannot take it,
        else run by ``Selectors`` (which marks its offset done once its work is durable)."""
        if self._selectors is None:
            raise InvalidCommand(
                DeadLetterReason.SCHEMA_VIOLATION,
                f"{command.kind} commands are not enabled on this worker",
                command_id=command.command_id,
            )
        self._selectors.check(command)
        if context.span.is_recording():
            context.span.set_attributes(
                {"bcw.command_id": command.command_id, "bcw.provider": command.provider, "bcw.kind": command.kind}
            )
        self._selectors.take(record, offsets, command, context)

    def _decode(self, record: Record) -> Command:
        command = decode_any(record.value, max_bytes=self._max_bytes)
        if command.provider not in self._providers:
            raise InvalidCommand(
                DeadLetterReason.UNKNOWN_PROVIDER,
                f"provider {command.provider!r} is not configured on this worker",
                command_id=command.command_id,
                partial=_partial(command),
            )
        if command.account not in self._accounts.get(command.provider, frozenset()):
            raise InvalidCommand(
                DeadLetterReason.UNKNOWN_ACCOUNT,
                f"account {command.account!r} is not configured for provider {command.provider!r}",
                command_id=command.command_id,
                partial=_partial(command),
            )
        if self._verifier is not None:  # accounts that require signed commands: needs the raw bytes and headers
            self._verifier.verify(record, command)
        return command

    async def _reject(self, record: Record, exc: InvalidCommand, context: CommandContext) -> None:
        log.warning(
            "dead-lettering %s@%d:%d: %s (%s)",
            record.topic,
            record.partition,
            record.offset,
            exc.reason.value,
            exc.message,
            extra={"command_id": exc.command_id},
        )
        metrics.DEAD_LETTERS.labels(exc.reason.value).inc()
        await self._sink.dead_letter(record, exc.reason, exc.message, context)
        if exc.command_id is not None:
            event = failure_event(
                command_id=exc.command_id,
                outcome=Outcome.INVALID,
                detail=FailureDetail(http_status=None, code=exc.reason.value, message=exc.message),
                provider=exc.partial.get("provider"),
                account=exc.partial.get("account"),
                batch_id=exc.partial.get("batch_id"),
            )
            await self._sink.publish(event, context)
