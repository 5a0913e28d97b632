"""One command waiting on a follow (``Subscriber``), and what its follow tells back about it (``CommandHandle``).

A process may hold 100,000 of each, so both are slotted and keep only what they need: the batch is the
follow's, the record's bytes and headers are gone once it is decoded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from worker.contract import BatchStateEvent, BatchStatus, Outcome
from worker.record import CommandOffsets
from worker.telemetry import CommandContext, metrics

__all__ = ["CommandHandle", "Subscriber"]

log = logging.getLogger("worker.dispatch")  # the "command finished" lines keep the logger they always had


class CommandHandle:
    """A command's two ends: its record may be committed (``release``), its final event is out (``finished``).

    Built by intake for each command taken in, and by the registry for each command resumed from a
    follow-state record (whose offset was committed by the previous owner: nothing to release). Immutable:
    a redelivered command gets a new handle (``Subscriber.redelivered``), so restored commands of one
    partition share one.
    """

    __slots__ = ("_offset", "_offsets", "resumed_in")

    def __init__(self, offsets: CommandOffsets | None, offset: int = -1, *, resumed_in: int | None = None) -> None:
        self._offsets = offsets
        self._offset = offset
        self.resumed_in = resumed_in  # the commands partition it was resumed in (None: taken in here)

    def release(self) -> None:
        """The command's intent is durable or its final event published: its offset may be committed."""
        offsets = self._offsets
        if offsets is not None and not offsets.revoked:
            offsets.finished(self._offset)

    def redelivered(self, again: CommandHandle) -> CommandHandle:
        """The same command, from a redelivered record: that record's offset, the log line it had."""
        return CommandHandle(again._offsets, again._offset, resumed_in=self.resumed_in)

    def finished(self, event: BatchStateEvent, context: CommandContext | None) -> Outcome:
        """What every final event of a followed command counts: its outcome, its latency, its span, one log line."""
        outcome = event.outcome
        if outcome is None:  # the contract's validator makes every final event carry one
            raise ValueError(f"event {event.event_id} is final without an outcome")
        metrics.COMMANDS.labels(outcome.value).inc()
        ids = context.log_ids if context is not None else {}  # written in the follow's context, not this command's
        if context is not None:
            metrics.COMMAND_FINAL_SECONDS.observe(max(0.0, time.time() - context.produced_at))
        if self.resumed_in is not None:
            log.info(
                "command finished: %s (resumed)",
                outcome.value,
                extra={
                    "event": "command_finished",
                    "command_id": event.command_id,
                    "batch_id": event.batch_id,
                    "partition": self.resumed_in,
                    **ids,
                },
            )
            return outcome
        if context is not None:
            context.span.set_attribute("bcw.outcome", outcome.value)
            context.span.end()
        log.info(
            "command finished: %s",
            outcome.value,
            extra={
                "event": "command_finished",
                "command_id": event.command_id,
                "provider": event.provider,
                "account": event.account,
                "batch_id": event.batch_id,
                "status": event.status.value if event.status else None,
                **ids,
            },
        )
        return outcome


#: Restored commands' handle when none is given (tests build subscribers by hand).
_NOTHING = CommandHandle(None)


@dataclass(eq=False, slots=True)
class Subscriber:
    """One command waiting on a batch: its own deadline (wall clock), last status told and final event.

    ``handle.release`` is called once, when the command's offset may be committed: its intent is durable or
    its final event is published. ``handle.finished`` is called once with that final event.
    Only the command's id and ``follow`` field are kept: the batch is the follow's.
    """

    command_id: str
    wants_follow: bool = True  # the command's ``follow``: report until terminal (False: only the cancel's answer)
    context: CommandContext | None = None  # its trace context (the events continue it) and Kafka timestamp
    deadline: float = float("inf")  # Unix seconds
    last_status: BatchStatus | None = None
    handle: CommandHandle = _NOTHING
    in_record: bool = False  # counted in the follow-state record (at most MAX_WAITING are)
    durable: bool = False
    final: BatchStateEvent | None = None
    released: bool = False

    @property
    def done(self) -> bool:
        return self.final is not None

    def release_once(self) -> None:
        if not self.released:
            self.released = True
            self.handle.release()

    def redelivered(self, again: CommandHandle) -> None:
        """Its record came again (a crash before the commit): the new record's offset is the one to release,
        at once when its entry is already durable."""
        self.handle = self.handle.redelivered(again)
        self.released = False
        if self.durable:
            self.release_once()
