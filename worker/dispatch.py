"""From a consumed record to a follow: decode, authorise, hand the command to its batch's follow.

The consumer hands every record to ``Dispatcher.submit`` and goes straight back to polling; nothing here
blocks the poll loop. A valid command is decoded, authorised and joined to the one ``Follow`` of its batch in
its partition within ``submit`` itself (``Follows.join``), with a ``CommandHandle`` that releases the
record's offset in its partition's ``CommandOffsets`` once the command's intent is durable on the follow-state
topic or its final event is published, whichever comes first; the commit loop does the rest. Anything wrong
goes to the dead-letter topic, plus a final ``invalid`` event when its ``command_id`` could be read: only that gets a
task of its own.

The follows themselves (resume, handover, shutdown) belong to ``worker.follow.Follows``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import context as otel_context

from worker.contract import (
    BatchStateEvent,
    CancelCommand,
    Command,
    DeadLetterReason,
    FailureDetail,
    InvalidCommand,
    LiftCommand,
    Outcome,
    SelectorCommand,
    decode_any,
    failure_event,
)
from worker.follow import CommandHandle, Follows, StateSink, Subscriber
from worker.record import CommandOffsets, Record
from worker.signing import SignatureVerifier
from worker.telemetry import CommandContext, CommandTracing, metrics

__all__ = ["Dispatcher", "EventSink", "Record", "StateSink"]

log = logging.getLogger("worker.dispatch")


class EventSink(Protocol):
    """Where outcomes go; both calls return only once the broker has the record (or raise CancelledError)."""

    async def publish(self, event: BatchStateEvent, context: CommandContext | None) -> None: ...
    async def dead_letter(
        self, record: Record, reason: DeadLetterReason, message: str, context: CommandContext | None
    ) -> None: ...


def _command_id(record: Record) -> str | None:
    """The command id of a record already known to decode, for the event that accompanies its dead letter."""
    try:
        return decode_any(record.value, max_bytes=1 << 30).command_id
    except Exception:  # noqa: BLE001 - best effort, for the event only
        return None


class SelectorTaker(Protocol):
    """``worker.sweep.Selectors`` as intake sees it."""

    def check(self, command: SelectorCommand | LiftCommand) -> None: ...
    def take(
        self, record: Record, offsets: CommandOffsets, command: SelectorCommand | LiftCommand, context: Any
    ) -> None: ...


def _partial(command: Command) -> dict[str, str]:
    """What an ``invalid`` event may echo of a command that decoded but cannot be taken."""
    fields = {"provider": command.provider, "account": command.account}
    return fields | ({"batch_id": command.batch_id} if isinstance(command, CancelCommand) else {})


class Dispatcher:
    """Intake: every record the poll loop fetches is decoded, authorised and handed to ``Follows``, or
    dead-lettered (a task of its own). Answers how much is in flight, for back-pressure."""

    def __init__(
        self,
        providers: Mapping[str, object],
        accounts: Mapping[str, frozenset[str]],
        sink: EventSink,
        follows: Follows,
        *,
        max_command_bytes: int,
        tracing: CommandTracing | None = None,
        verifier: SignatureVerifier | None = None,
        selectors: SelectorTaker | None = None,
    ) -> None:
        self._providers = providers
        self._accounts = accounts
        self._sink = sink
        self.follows = follows
        self._max_bytes = max_command_bytes
        self._tracing = tracing or CommandTracing(group_id="")
        self._verifier = verifier
        self._tasks: dict[int, set[asyncio.Task[None]]] = {}
        self._selectors = selectors

    # --- what the consumer and the metrics read -------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Commands taken in whose final event is not yet published (back-pressure counts these)."""
        return self.follows.waiting + self.dead_lettering

    @property
    def dead_lettering(self) -> int:
        """Records handed over and not yet done with: only those being dead-lettered, because a valid command
        is decoded and joined to its follow within ``submit``."""
        return sum(len(t) for t in self._tasks.values())

    # --- intake ---------------------------------------------------------------------------------------------
    def submit(self, record: Record, offsets: CommandOffsets) -> None:
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

    async def stop_intake(self, partitions: Sequence[int] | None = None) -> None:
        """Revocation or shutdown (``None``: every partition): dead letters still being written for these
        partitions stop; their records stay uncommitted and the next owner takes them in again."""
        wanted = set(self._tasks) if partitions is None else set(partitions)
        tasks = [t for p in wanted for t in self._tasks.pop(p, set())]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one command ----------------------------------------------------------------------------------------
    async def _invalid(
        self, record: Record, offsets: CommandOffsets, exc: InvalidCommand, context: CommandContext
    ) -> None:
        await self._reject(record, exc, context)
        self._finished(record, offsets, Outcome.INVALID, context)

    def _finished(self, record: Record, offsets: CommandOffsets, outcome: Outcome, context: CommandContext) -> None:
        metrics.COMMANDS.labels(outcome.value).inc()
        metrics.COMMAND_FINAL_SECONDS.observe(max(0.0, time.time() - context.produced_at))
        context.span.end()
        if not offsets.revoked:
            offsets.finished(record.offset)

    def _join(self, record: Record, offsets: CommandOffsets, command: CancelCommand, context: CommandContext) -> None:
        limit = min(command.follow_timeout_s or float("inf"), self.follows.policy.max_follow)
        sub = Subscriber(
            command.command_id,
            wants_follow=command.follow,
            context=context,
            deadline=time.time() + limit,
            handle=CommandHandle(offsets, record.offset),  # the offset, not the record (its bytes and headers)
        )
        if not self.follows.join(record.partition, command, sub):
            # a redelivery of a command the follow already has (restored): it keeps its original span
            log.info("command %s is already being followed; not following it twice", command.command_id)
            context.span.end()

    # --- invalid input --------------------------------------------------------------------------------------
    async def _park(self, record: Record, offsets: CommandOffsets, error: Exception, context: CommandContext) -> None:
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

    def _hand_over(
        self, record: Record, offsets: CommandOffsets, command: SelectorCommand | LiftCommand, context: Any
    ) -> None:
        """A selector or lift: refused here like any command when its provider or the clock cannot take it,
        else run by ``Selectors`` (which marks its offset done once its work is durable)."""
        if self._selectors is None:
            raise InvalidCommand(
                DeadLetterReason.SCHEMA_VIOLATION,
                f"{command.kind} commands are not enabled on this worker",
                command_id=command.command_id,
                partial=_partial(command),
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
