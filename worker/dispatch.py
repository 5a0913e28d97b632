"""From a consumed record to a published outcome: one asyncio task per command.

The consumer hands every record to ``Dispatcher.submit`` and goes straight back to polling; nothing here
blocks the poll loop. A command's task decodes and authorises it (anything wrong goes to the dead-letter
topic, plus a final ``invalid`` event when its ``command_id`` could be read), then joins the one
``BatchWatch`` of its batch and waits for its own final event. Only after that event is acknowledged by
the broker is the record marked finished in its partition's ``PartitionOffsets``; the commit loop does
the rest. A task that is cancelled (rebalance, shutdown) never marks its record, so it is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import context as otel_context

from worker import metrics
from worker.contract import (
    BatchStateEvent,
    CancelCommand,
    DeadLetterReason,
    FailureDetail,
    InvalidCommand,
    Outcome,
    decode_command,
    failure_event,
)
from worker.follow import BatchWatch, FollowPolicy, Provider, Subscriber, WatchEnded, command_failure
from worker.kafka.offsets import PartitionOffsets
from worker.record import Record
from worker.signing import SignatureVerifier
from worker.telemetry import CommandContext, CommandTracing

__all__ = ["Dispatcher", "EventSink", "Record"]

log = logging.getLogger("worker.dispatch")


class EventSink(Protocol):
    """Where outcomes go; both calls return only once the broker has the record (or raise CancelledError)."""

    async def publish(self, event: BatchStateEvent, context: Any) -> None: ...
    async def dead_letter(self, record: Record, reason: DeadLetterReason, message: str, context: Any) -> None: ...


def _command_id(record: Record) -> str | None:
    """The command id of a record already known to decode, for the event that accompanies its dead letter."""
    try:
        return decode_command(record.value, max_bytes=1 << 30).command_id
    except Exception:  # noqa: BLE001 - best effort, for the event only
        return None


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        accounts: Mapping[str, frozenset[str]],
        sink: EventSink,
        policy: FollowPolicy,
        *,
        max_command_bytes: int,
        tracing: CommandTracing | None = None,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        self._providers = providers
        self._accounts = accounts
        self._sink = sink
        self._policy = policy
        self._max_bytes = max_command_bytes
        self._tracing = tracing or CommandTracing(group_id="")
        self._verifier = verifier
        self._tasks: dict[tuple[str, int], set[asyncio.Task[None]]] = {}
        self._watches: dict[str, BatchWatch] = {}

    @property
    def in_flight(self) -> int:
        return sum(len(t) for t in self._tasks.values())

    @property
    def following(self) -> int:
        return len(self._watches)

    def submit(self, record: Record, offsets: PartitionOffsets) -> None:
        tp = (record.topic, record.partition)
        task = asyncio.create_task(self._handle(record, offsets), name=f"command {record.partition}@{record.offset}")
        tasks = self._tasks.setdefault(tp, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def abandon(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Stop the work of revoked partitions without marking it done: its new owner redoes it."""
        doomed = [t for tp in partitions for t in self._tasks.pop(tp, set())]
        for t in doomed:
            t.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)

    async def drain(self, timeout: float) -> int:
        """Let in-flight commands finish for up to ``timeout`` seconds; returns how many did not."""
        pending = [t for tasks in self._tasks.values() for t in tasks]
        if pending and timeout > 0:
            await asyncio.wait(pending, timeout=timeout)
        return sum(1 for t in pending if not t.done())

    async def close(self) -> None:
        await self.abandon(list(self._tasks))
        for watch in list(self._watches.values()):
            if watch.task:
                watch.task.cancel()
        await asyncio.gather(*(w.task for w in self._watches.values() if w.task), return_exceptions=True)
        self._watches.clear()

    async def _handle(self, record: Record, offsets: PartitionOffsets) -> None:
        context = self._tracing.command_context(record)
        token = otel_context.attach(context.otel)  # logs get trace ids; the watch task inherits the span
        try:
            try:
                command = self._decode(record)
            except InvalidCommand as exc:
                context.span.set_attribute("bcw.outcome", Outcome.INVALID.value)
                await self._reject(record, exc, context)
                outcome = Outcome.INVALID
            except Exception:  # noqa: BLE001 - a bug must park one record, never stall its partition's watermark
                outcome = await self._park(record, context)
            else:
                context.span.set_attributes(
                    {
                        "bcw.command_id": command.command_id,
                        "bcw.provider": command.provider,
                        "bcw.account": command.account,
                        "bcw.batch_id": command.batch_id,
                    }
                )
                try:
                    final = await self._follow(command, context)
                except Exception:  # noqa: BLE001 - as above
                    outcome = await self._park(record, context)
                else:
                    outcome = final.outcome or Outcome.ACCEPTED
                    context.span.set_attribute("bcw.outcome", outcome.value)
                    log.info(
                        "command finished: %s",
                        outcome.value,
                        extra={
                            "command_id": command.command_id,
                            "provider": command.provider,
                            "account": command.account,
                            "batch_id": command.batch_id,
                            "status": final.status.value if final.status else None,
                        },
                    )
            metrics.COMMANDS.labels(outcome.value).inc()
            metrics.COMMAND_FINAL_SECONDS.observe(max(0.0, time.time() - context.produced_at))
            if not offsets.revoked:
                offsets.finished(record.offset)
        finally:
            context.span.end()
            otel_context.detach(token)

    async def _park(self, record: Record, context: CommandContext) -> Outcome:
        """Dead-letter a record the worker failed on (``internal_error``), so its partition moves on.

        The exception goes to the log with its traceback; the dead letter names only its type, because an
        exception message can carry anything. If even that fails, the record is logged and left behind:
        a partition stalled forever would stop every later command in it.
        """
        log.exception("internal error on %s@%d:%d; dead-lettering it", record.topic, record.partition, record.offset)
        kind = type(sys.exc_info()[1]).__name__
        exc = InvalidCommand(
            DeadLetterReason.INTERNAL_ERROR,
            f"the worker failed on this record ({kind}); see its logs, fix, then replay",
            command_id=_command_id(record),
        )
        try:
            await self._reject(record, exc, context)
        except Exception:
            log.exception(
                "could not dead-letter %s@%d:%d either; skipping it", record.topic, record.partition, record.offset
            )
        return Outcome.INVALID

    def _decode(self, record: Record) -> CancelCommand:
        command = decode_command(record.value, max_bytes=self._max_bytes)
        if command.provider not in self._providers:
            raise InvalidCommand(
                DeadLetterReason.UNKNOWN_PROVIDER,
                f"provider {command.provider!r} is not configured on this worker",
                command_id=command.command_id,
                partial={"provider": command.provider, "account": command.account, "batch_id": command.batch_id},
            )
        if command.account not in self._accounts.get(command.provider, frozenset()):
            raise InvalidCommand(
                DeadLetterReason.UNKNOWN_ACCOUNT,
                f"account {command.account!r} is not configured for provider {command.provider!r}",
                command_id=command.command_id,
                partial={"provider": command.provider, "account": command.account, "batch_id": command.batch_id},
            )
        if self._verifier is not None:  # accounts that require signed commands: needs the raw bytes and headers
            self._verifier.verify(record, command)
        return command

    async def _reject(self, record: Record, exc: InvalidCommand, context: Any) -> None:
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

    async def _follow(self, command: CancelCommand, context: CommandContext) -> BatchStateEvent:
        """Join the batch's watch and wait for this command's final event.

        If the watch ends without finishing us (it was cancelled, or a bug), join a fresh one rather than
        hang: the cancel is idempotent and the record must not be left unfinished.
        """
        limit = min(command.follow_timeout_s or float("inf"), self._policy.max_follow)
        deadline = time.monotonic() + limit
        while True:
            sub = Subscriber(command, context=context, deadline=deadline)
            watch = self._watch_for(command)
            try:
                await watch.subscribe(sub)
                return await sub.finished
            except WatchEnded:
                pass
            finally:
                watch.unsubscribe(sub)
                if watch.idle and watch.task is not None and not watch.task.done():
                    watch.task.cancel()
            if time.monotonic() >= deadline:  # never re-follow forever: the command's own limit still holds
                detail = FailureDetail(http_status=None, code="follow_timeout", message="following kept failing")
                event = command_failure(command, Outcome.GAVE_UP, detail)
                await self._sink.publish(event, context)
                return event
            log.warning(
                "watch of %s ended before command %s finished; following again", command.key, command.command_id
            )
            await asyncio.sleep(self._policy.initial_interval)

    def _watch_for(self, command: CancelCommand) -> BatchWatch:
        key = command.key
        watch = self._watches.get(key)
        if watch is not None and watch.task is not None and not watch.task.done() and not watch.task.cancelling():
            return watch

        async def publish(sub: Subscriber, event: BatchStateEvent) -> None:
            await self._sink.publish(event, sub.context)
            ctx = sub.context
            if isinstance(ctx, CommandContext) and ctx.first_event_at is None:
                ctx.first_event_at = time.time()
                metrics.CANCEL_ACCEPTED_SECONDS.observe(max(0.0, ctx.first_event_at - ctx.produced_at))

        watch = BatchWatch(self._providers[command.provider], command.account, command.batch_id, publish, self._policy)
        watch.task = asyncio.create_task(watch.run(), name=f"watch {key}")
        self._watches[key] = watch

        def forget(_: asyncio.Task[None]) -> None:
            if self._watches.get(key) is watch:
                del self._watches[key]

        watch.task.add_done_callback(forget)
        return watch
