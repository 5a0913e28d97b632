"""One sweep of one selector: list, match, guard, then preview or publish the children; report as it goes.

The guard comes before any cancel: when more batches match than ``max_batches``, the sweep publishes nothing
and says how many matched. A refused list call (401, 403, 404…) ends the selector ``rejected`` and one that
kept failing past the retry budget ``gave_up``; a list call is never half-trusted, because a sweep that saw
only some pages would cancel some batches and silently spare the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.contract import (
    FailureDetail,
    MatchedBatch,
    SelectorCommand,
    SelectorEvent,
    SelectorOutcome,
)
from worker.contract.selector_event import MAX_LISTED
from worker.errors import GaveUp, Rejected
from worker.providers.listing import UnsupportedCriterion
from worker.sweep.criteria import to_filter
from worker.sweep.expand import CommandSink, publish_children
from worker.sweep.listing import Lister, Sweep, walk

__all__ = ["PROGRESS_EVERY_PAGES", "SelectorSink", "SweepReport", "run_sweep"]

log = logging.getLogger("worker.sweep")

#: One progress event per this many pages (and one when the listing is done): a 120-page sweep says so
#: twelve times, not 120.
PROGRESS_EVERY_PAGES = 10


class SelectorSink(Protocol):
    """Where selector events go; durable when ``publish_selector`` returns."""

    async def publish_selector(self, event: SelectorEvent, context: Any) -> None: ...


@dataclass
class SweepReport:
    """How one sweep ended: ``outcome`` None means it published (or previewed) what it should."""

    sweep: int
    outcome: SelectorOutcome | None
    pages: int = 0
    listed: int = 0
    matched: int = 0
    published: list[str] = field(default_factory=list)
    #: Batch ids this sweep published a child for (a standing kill skips them later).
    covered: list[str] = field(default_factory=list)
    matches: list[MatchedBatch] = field(default_factory=list)
    detail: FailureDetail | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "pages": self.pages,
            "listed": self.listed,
            "matched": self.matched,
            "published": len(self.published),
            "children": self.published[:MAX_LISTED],
            "children_truncated": len(self.published) > MAX_LISTED,
            "matches": self.matches,
            "detail": self.detail,
        }


def _preview(sweep: Sweep) -> list[MatchedBatch]:
    return [
        MatchedBatch(
            batch_id=b.batch_id,
            status=b.status,
            provider_status=b.provider_status[:256],
            created_at=b.created_at,
            model=b.model[:256] if b.model else None,
            name=b.name[:256] if b.name else None,
            metadata=dict(list(b.metadata.items())[:16]),
        )
        for b in sweep.batches[:MAX_LISTED]
    ]


async def run_sweep(
    command: SelectorCommand,
    lister: Lister,
    commands: CommandSink,
    events: SelectorSink,
    context: Any,
    *,
    sweep_number: int = 1,
    skip: Collection[str] = (),
    budget: float | None = None,
) -> SweepReport:
    """List, match, guard, then preview or publish; ``skip`` holds batch ids a standing kill already covered."""
    report = SweepReport(sweep=sweep_number, outcome=None)

    async def progress(sweep: Sweep) -> None:
        report.pages, report.listed, report.matched = sweep.pages, sweep.listed, sweep.matched
        if sweep.pages % PROGRESS_EVERY_PAGES == 0:
            await events.publish_selector(_progress(command, report), context)

    keep = command.max_batches + 1 if not command.dry_run else max(MAX_LISTED, command.max_batches + 1)
    try:
        sweep = await walk(lister, command.account, to_filter(command.match), keep=keep, skip=skip, on_page=progress)
    except Rejected as exc:
        report.outcome = SelectorOutcome.REJECTED
        report.detail = FailureDetail(http_status=exc.http_status, code=exc.code or "list_refused", message=exc.message)
        return report
    except GaveUp as exc:
        report.outcome = SelectorOutcome.GAVE_UP
        report.detail = FailureDetail(code="list_retries_exhausted", message=str(exc))
        return report
    except UnsupportedCriterion as exc:  # only the answer showed it (an OpenAI-compatible list without ``model``)
        report.outcome = SelectorOutcome.REJECTED
        report.detail = FailureDetail(code="unsupported_criterion", message=f"{exc}; nothing was cancelled")
        return report
    report.pages, report.listed, report.matched = sweep.pages, sweep.listed, sweep.matched
    if sweep.fresh > command.max_batches:
        report.outcome = SelectorOutcome.REJECTED
        report.detail = FailureDetail(
            code="too_many_matches",
            message=f"{sweep.fresh} batches match; max_batches is {command.max_batches}; nothing was cancelled",
        )
        return report
    if command.dry_run:
        report.outcome = SelectorOutcome.PREVIEWED
        report.matches = _preview(sweep)
        return report
    report.published = list(await publish_children(commands, command, sweep.batches, context, budget=budget))
    report.covered = [b.batch_id for b in sweep.batches]
    log.info(
        "selector expanded",
        extra={
            "event": "selector_expanded",
            "command_id": command.command_id,
            "provider": command.provider,
            "account": command.account,
            "sweep": sweep_number,
            "matched": sweep.matched,
            "published": len(report.published),
        },
    )
    return report


def _progress(command: SelectorCommand, report: SweepReport) -> SelectorEvent:
    """Listing still under way: counts so far, no children or matches yet."""
    return _event(command, None, swept=False, **{**report.fields(), "children": [], "matches": [], "detail": None})


def final_event(command: SelectorCommand, report: SweepReport, outcome: SelectorOutcome) -> SelectorEvent:
    """The selector's one final. Its id depends on the command alone: a final repeated after a crash (in the
    window between the final and the offset commit) is the same event to a consumer that deduplicates by id."""
    return _event(command, outcome, swept=True, **report.fields())


def _event(command: SelectorCommand, outcome: SelectorOutcome | None, **fields: Any) -> SelectorEvent:
    return SelectorEvent.build(
        command.command_id,
        command.provider,
        command.account,
        standing=command.standing,
        dry_run=command.dry_run,
        final=outcome is not None,
        outcome=outcome,
        **fields,
    )
