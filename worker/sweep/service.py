"""``Selectors``: runs the selector and lift commands intake hands over, and keeps this worker's standing kills.

Intake (``worker.dispatch``) decodes and authorises a selector like any command, asks ``check`` for the refusals
only a provider or the clock can make (a criterion the provider cannot evaluate, ``until`` in the past or too
far ahead), then hands it to ``take``, which runs it in a task of its own. A record's offset is marked done only
when its work is durable: for a one-shot selector once every child is acknowledged and the final published, for
a standing kill once its first sweep's children are acknowledged and its record is on the follow-state topic, for
a lift once the kill's end is recorded.

Standing kills are restored from the follow-state topic with the follows of a partition (``resume``) and swept
at once, so a batch started while the kill moved between workers is caught within one interval of the move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from worker.contract import (
    DeadLetterReason,
    FailureDetail,
    InvalidCommand,
    KillState,
    LiftCommand,
    SelectorCommand,
    SelectorEvent,
    SelectorOutcome,
    check_until,
)
from worker.providers.listing import UnsupportedCriterion
from worker.record import CommandOffsets, Record
from worker.sweep.criteria import to_filter
from worker.sweep.expand import CommandSink
from worker.sweep.kill import KillStore, StandingKill
from worker.sweep.listing import ListingClient
from worker.sweep.runner import SelectorSink, SweepReport, final_event, run_sweep
from worker.telemetry import metrics

__all__ = ["ListingClient", "Selectors"]

log = logging.getLogger("worker.sweep")

KillId = tuple[str, str, str]  # (provider, account, selector command id)


class Selectors:
    """Selector and lift commands in flight, and the standing kills of the partitions this worker owns."""

    def __init__(
        self,
        listers: Mapping[str, ListingClient],
        commands: CommandSink,
        events: SelectorSink,
        store: KillStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._listers = dict(listers)
        self._commands = commands
        self._events = events
        self._store = store
        self._clock = clock
        self._kills: dict[KillId, StandingKill] = {}
        self._tasks: dict[int, set[asyncio.Task[None]]] = {}

    @property
    def standing(self) -> Sequence[KillState]:
        return [k.state for k in self._kills.values()]

    # --- intake ---------------------------------------------------------------------------------------------
    def check(self, command: SelectorCommand | LiftCommand) -> None:
        """Raise ``InvalidCommand`` for what only the provider's dialect or the clock can refuse."""
        if not isinstance(command, SelectorCommand):
            return
        partial = {"provider": command.provider, "account": command.account}
        try:
            self._listers[command.provider].check_filter(to_filter(command.match))
        except UnsupportedCriterion as exc:
            raise InvalidCommand(
                DeadLetterReason.UNSUPPORTED_CRITERION, str(exc), command_id=command.command_id, partial=partial
            ) from None
        why = check_until(command, datetime.fromtimestamp(self._clock(), UTC))
        if why is not None:
            raise InvalidCommand(DeadLetterReason.SCHEMA_VIOLATION, why, command_id=command.command_id, partial=partial)

    def take(
        self, record: Record, offsets: CommandOffsets, command: SelectorCommand | LiftCommand, context: Any
    ) -> None:
        """Run the command in a task of its own; its offset is marked done once its work is durable."""
        if isinstance(command, SelectorCommand):
            work = self._selector(record, offsets, command, context)
        else:
            work = self._lift(record, offsets, command, context)
        task = asyncio.create_task(work, name=f"{command.kind} {command.command_id}")
        tasks = self._tasks.setdefault(record.partition, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _selector(self, record: Record, offsets: CommandOffsets, command: SelectorCommand, context: Any) -> None:
        lister = self._listers[command.provider]
        try:
            budget = lister.request_budget(command.account)
            report = await run_sweep(command, lister, self._commands, self._events, context, budget=budget)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must end this one selector, not hold its partition's offsets forever
            log.exception("selector %s failed; ending it gave_up", command.command_id)
            why = f"the worker failed on this selector ({type(exc).__name__}); see its logs"
            report = SweepReport(sweep=1, outcome=SelectorOutcome.GAVE_UP)
            report.detail = FailureDetail(code="internal_error", message=why)
        metrics.SELECTOR_MATCHES.labels(command.provider).inc(report.matched)
        if command.standing and report.outcome is None:
            now = datetime.fromtimestamp(self._clock(), UTC)
            state = KillState(
                selector=command, sweeps=1, published=len(report.published), started_at=now, updated_at=now
            )
            await self._store.write_kill(record.partition, state.key, state)
            kill = self._adopt(state, record.partition, context)
            kill.covered.update(report.covered)
            self._start(kill, self._clock() + command.sweep_interval_s)
            await self._events.publish_selector(_sweep_progress(command, report), context)
            log.info(
                "standing kill started",
                extra={"event": "kill_started", "command_id": command.command_id, "until": str(command.until)},
            )
        else:
            outcome = report.outcome or (SelectorOutcome.PREVIEWED if command.dry_run else SelectorOutcome.EXPANDED)
            await self._events.publish_selector(final_event(command, report, outcome), context)
            metrics.SELECTORS.labels(outcome.value).inc()
        offsets.finished(record.offset)

    async def _lift(self, record: Record, offsets: CommandOffsets, lift: LiftCommand, context: Any) -> None:
        kill = self._kills.pop((lift.provider, lift.account, lift.kill_id), None)
        if kill is None:
            outcome = SelectorOutcome.REJECTED
            detail: FailureDetail | None = FailureDetail(
                code="no_such_kill",
                message=f"no standing kill {lift.kill_id!r} of {lift.provider}/{lift.account} is held by the worker "
                f"that owns this partition (ended already, or the lift is not keyed {lift.key!r})",
            )
        else:
            await kill.end("lifted", f"lifted by {lift.requested_by}: {lift.reason}")
            self._gauge()
            outcome, detail = SelectorOutcome.LIFTED, None
        event = SelectorEvent.build(
            lift.command_id, lift.provider, lift.account, final=True, outcome=outcome, detail=detail
        )
        await self._events.publish_selector(event, context)
        metrics.SELECTORS.labels(outcome.value).inc()
        offsets.finished(record.offset)

    # --- ownership ------------------------------------------------------------------------------------------
    def resume(self, partition: int, states: Iterable[KillState]) -> int:
        """Keep the kills a previous owner of ``partition`` left: finish an ended one, sweep the others now."""
        count = 0
        for state in states:
            kill = self._adopt(state, partition, None)
            if state.ended is not None:
                ended = state.ended
                kill.task = asyncio.create_task(self._finish(kill, ended.code or "ended", ended.message))
            else:
                self._start(kill, self._clock())
            count += 1
        return count

    async def _finish(self, kill: StandingKill, code: str, message: str) -> None:
        self._kills.pop(_id(kill.command), None)
        await kill.end(code, message)
        self._gauge()

    async def stop_partitions(self, partitions: Sequence[int], grace: float) -> None:
        """Revocation: stop sweeping those partitions' kills and drop their selectors in flight (their offsets
        are not committed, so the next owner runs them again, publishing the same children)."""
        moving = set(partitions)
        kills = [k for k in self._kills.values() if k.partition in moving]
        for kill in kills:
            self._kills.pop(_id(kill.command), None)
        running = [t for p in moving for t in self._tasks.pop(p, set())]
        if running:
            await asyncio.wait(running, timeout=grace)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, *(k.stop() for k in kills), return_exceptions=True)
        self._gauge()

    async def close(self, grace: float = 0.0) -> None:
        partitions = {k.partition for k in self._kills.values()} | set(self._tasks)
        await self.stop_partitions(sorted(partitions), grace)

    def _adopt(self, state: KillState, partition: int, context: Any) -> StandingKill:
        command = state.selector
        kill = StandingKill(
            state=state,
            partition=partition,
            lister=self._listers[command.provider],
            commands=self._commands,
            events=self._events,
            store=self._store,
            context=context,
            clock=self._clock,
        )
        self._kills[_id(command)] = kill
        self._gauge()
        return kill

    def _start(self, kill: StandingKill, first_sweep_at: float) -> None:
        kill.start(first_sweep_at)
        assert kill.task is not None
        kill.task.add_done_callback(lambda _: self._forget(kill))

    def _forget(self, kill: StandingKill) -> None:
        """A kill whose loop ended by itself (``until`` passed) leaves the registry."""
        if kill.state.ended is not None and self._kills.get(_id(kill.command)) is kill:
            del self._kills[_id(kill.command)]
            self._gauge()

    def _gauge(self) -> None:
        metrics.KILLS_ACTIVE.set(len(self._kills))


def _id(command: SelectorCommand) -> KillId:
    return (command.provider, command.account, command.command_id)


def _sweep_progress(command: SelectorCommand, report: SweepReport) -> SelectorEvent:
    return SelectorEvent.build(
        command.command_id,
        command.provider,
        command.account,
        standing=True,
        final=False,
        outcome=None,
        swept=True,
        **{**report.fields(), "matches": []},
    )
