"""One standing kill: sweep on schedule until ``until`` or a lift, record each sweep, end with one final.

Sweeps after the first do not end the kill when they fail: a list call refused or failing, or more new matches
than ``max_batches``, is reported (progress event with ``detail``, ``bcw_selector_sweep_failures_total``) and the
next sweep tries again, because a guard that stops at the first provider hiccup guards nothing. Batches this
kill already published a cancel for are skipped in later sweeps (in memory; after a move the next owner may
publish one of them again, with the same child id, which the follow engine takes as a redelivery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from worker.contract import FailureDetail, KillState, SelectorCommand, SelectorEvent, SelectorOutcome
from worker.sweep.expand import CommandSink
from worker.sweep.listing import ListingClient
from worker.sweep.runner import SelectorSink, SweepReport, final_event, run_sweep
from worker.telemetry import metrics

__all__ = ["KillStore", "StandingKill"]

log = logging.getLogger("worker.sweep.kill")


class KillStore(Protocol):
    """Where kill records go (the follow-state topic); durable when ``write_kill`` returns."""

    async def write_kill(self, partition: int, key: str, state: KillState | None) -> None: ...


@dataclass
class StandingKill:
    """A kill this worker owns: its record, the loop task that sweeps it, and what it already covered."""

    state: KillState
    partition: int
    lister: ListingClient
    commands: CommandSink
    events: SelectorSink
    store: KillStore
    context: Any = None
    clock: Callable[[], float] = time.time
    covered: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    @property
    def command(self) -> SelectorCommand:
        return self.state.selector

    def start(self, first_sweep_at: float) -> None:
        self.task = asyncio.create_task(self._run(first_sweep_at), name=f"standing kill {self.command.command_id}")

    async def stop(self) -> None:
        """This worker no longer owns the kill (revocation, shutdown): stop sweeping; the record stays."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def end(self, code: str, message: str) -> None:
        """Record the end, publish the kill's final, then the tombstone (a crash in between ends it again)."""
        if self.task is not None and self.task is not asyncio.current_task():
            await self.stop()
        detail = FailureDetail(code=code, message=message)
        await self._record(ended=detail)
        report = SweepReport(sweep=self.state.sweeps, outcome=SelectorOutcome.ENDED, detail=detail)
        final = final_event(self.command, report, SelectorOutcome.ENDED)
        await self.events.publish_selector(final.model_copy(update={"published": self.state.published}), self.context)
        await self.store.write_kill(self.partition, self.state.key, None)
        metrics.SELECTORS.labels(SelectorOutcome.ENDED.value).inc()
        log.info(
            "standing kill ended",
            extra={"event": "kill_ended", "command_id": self.command.command_id, "code": code},
        )

    async def sweep(self) -> SweepReport:
        """One sweep now; records the count and reports it as a progress event."""
        number = self.state.sweeps + 1
        report = await run_sweep(
            self.command,
            self.lister,
            self.commands,
            self.events,
            self.context,
            sweep_number=number,
            skip=self.covered,
            budget=self.lister.request_budget(self.command.account),
        )
        self.covered.update(report.covered)
        if report.outcome is not None:
            metrics.SWEEP_FAILURES.labels(self.command.provider, self.command.account).inc()
            log.warning(
                "standing kill sweep failed",
                extra={
                    "event": "kill_sweep_failed",
                    "command_id": self.command.command_id,
                    "sweep": number,
                    "code": report.detail.code if report.detail else None,
                },
            )
        await self._record(sweeps=number, published=self.state.published + len(report.published))
        progress = SelectorEvent.build(
            self.command.command_id,
            self.command.provider,
            self.command.account,
            standing=True,
            final=False,
            outcome=None,
            swept=True,
            **{**report.fields(), "published": self.state.published, "matches": []},
        )
        await self.events.publish_selector(progress, self.context)
        return report

    async def _run(self, first_sweep_at: float) -> None:
        until = self.command.until
        assert until is not None
        due = first_sweep_at
        while True:
            now = self.clock()
            if now >= until.timestamp():
                await self.end("until_passed", f"the kill stood until {until.isoformat()}")
                return
            await asyncio.sleep(max(0.0, min(due, until.timestamp()) - now))
            if self.clock() < until.timestamp():
                try:
                    await self.sweep()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug in one sweep must not end the kill: log it, count it, sweep again later
                    metrics.SWEEP_FAILURES.labels(self.command.provider, self.command.account).inc()
                    log.exception("standing kill %s: sweep failed", self.command.command_id)
                due = self.clock() + self.command.sweep_interval_s

    async def _record(self, **changes: Any) -> None:
        self.state = self.state.model_copy(update={**changes, "updated_at": datetime.now(UTC)})
        await self.store.write_kill(self.partition, self.state.key, self.state)
