"""The sweep core with a fake list and fake sinks: paging, guard, preview, children, refusals."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from worker.contract import (
    BatchStatus,
    Criteria,
    SelectorCommand,
    SelectorEvent,
    SelectorOutcome,
    child_command_id,
    decode_command,
)
from worker.errors import GaveUp, Rejected
from worker.providers.listing import ListedBatch, ListFilter, ListPage
from worker.sweep.expand import PARENT_KEY
from worker.sweep.listing import MAX_PAGES
from worker.sweep.runner import final_event, run_sweep


def _batch(n: int, status: BatchStatus = BatchStatus.IN_PROGRESS, team: str = "eval") -> ListedBatch:
    return ListedBatch(
        batch_id=f"batch_{n}",
        status=status,
        provider_status=status.value,
        created_at=1_700_000_000 + n,
        metadata={"team": team},
        model="gpt-4o",
        endpoint="/v1/chat/completions",
        name=None,
    )


class FakeList:
    """Pages of ``size``; matches on our side by status and the team metadata, like a client-side dialect."""

    def __init__(self, batches: list[ListedBatch], size: int = 3, fail: Exception | None = None) -> None:
        self.batches, self.size, self.fail = batches, size, fail
        self.calls: list[tuple[str, str | None]] = []
        self.filters: list[ListFilter] = []

    async def list_page(self, account: str, f: ListFilter, cursor: str | None, *, page_size: int = 100) -> ListPage:
        self.calls.append((account, cursor))
        self.filters.append(f)
        if self.fail is not None:
            raise self.fail
        start = int(cursor or 0)
        page = self.batches[start : start + self.size]
        hits = tuple(
            b
            for b in page
            if (f.statuses is None or b.status in f.statuses)
            and all(b.metadata.get(k) == v for k, v in f.metadata.items())
        )
        more = start + self.size < len(self.batches)
        return ListPage(listed=len(page), batches=hits, next_cursor=str(start + self.size) if more else None)


class Sinks:
    def __init__(self) -> None:
        self.commands: list[tuple[str, bytes]] = []
        self.events: list[SelectorEvent] = []

    async def send_command(self, key: str, value: bytes, context: Any) -> None:
        await asyncio.sleep(0)
        self.commands.append((key, value))

    async def publish_selector(self, event: SelectorEvent, context: Any) -> None:
        self.events.append(event)


def _selector(**fields: Any) -> SelectorCommand:
    body = {
        "kind": "cancel_matching",
        "command_id": "kill-1",
        "provider": "openai",
        "account": "team-a",
        "match": {"metadata": {"team": "eval"}},
        "reason": "over budget",
        "requested_by": "budget-guard",
        **fields,
    }
    return SelectorCommand.model_validate(body)


def _population() -> list[ListedBatch]:
    return [
        _batch(1),
        _batch(2, team="prod"),
        _batch(3, BatchStatus.COMPLETED),
        _batch(4),
        _batch(5, BatchStatus.CANCELLING),
        _batch(6, BatchStatus.VALIDATING),
        _batch(7),
    ]


async def test_every_page_is_listed_and_exactly_the_matches_become_children() -> None:
    lister, sinks = FakeList(_population()), Sinks()
    report = await run_sweep(_selector(), lister, sinks, sinks, None)
    assert [c for _, c in lister.calls] == [None, "3", "6"]
    assert (report.outcome, report.pages, report.listed, report.matched) == (None, 3, 7, 4)
    children = [decode_command(value, max_bytes=65536) for _, value in sinks.commands]
    assert [c.batch_id for c in children] == ["batch_1", "batch_4", "batch_6", "batch_7"]
    for key, value in sinks.commands:
        child = decode_command(value, max_bytes=65536)
        assert key == f"openai/team-a/{child.batch_id}"  # lands where a publisher's own command lands
        assert child.command_id == child_command_id("kill-1", "openai", "team-a", child.batch_id)
        assert (child.reason, child.requested_by, child.metadata[PARENT_KEY]) == (
            "over budget",
            "budget-guard",
            "kill-1",
        )
    assert report.published == [c.command_id for c in children]
    final = final_event(_selector(), report, SelectorOutcome.EXPANDED)
    assert final.children == report.published and final.published == 4 and not final.children_truncated


async def test_default_statuses_leave_out_cancelling_and_terminal_batches() -> None:
    lister, sinks = FakeList(_population()), Sinks()
    await run_sweep(_selector(), lister, sinks, sinks, None)
    assert lister.filters[0].statuses == frozenset(
        {
            BatchStatus.VALIDATING,
            BatchStatus.QUEUED,
            BatchStatus.IN_PROGRESS,
            BatchStatus.FINALIZING,
        }
    )


async def test_more_matches_than_max_batches_cancel_nothing_and_report_the_count() -> None:
    lister, sinks = FakeList(_population()), Sinks()
    report = await run_sweep(_selector(max_batches=3), lister, sinks, sinks, None)
    assert report.outcome is SelectorOutcome.REJECTED and report.detail is not None
    assert report.detail.code == "too_many_matches"
    assert report.detail.message.startswith("4 batches match; max_batches is 3")
    assert sinks.commands == []


async def test_a_dry_run_previews_the_matches_and_publishes_nothing() -> None:
    lister, sinks = FakeList(_population()), Sinks()
    report = await run_sweep(_selector(dry_run=True), lister, sinks, sinks, None)
    assert report.outcome is SelectorOutcome.PREVIEWED and sinks.commands == []
    assert [(m.batch_id, m.status, m.metadata) for m in report.matches][:2] == [
        ("batch_1", BatchStatus.IN_PROGRESS, {"team": "eval"}),
        ("batch_4", BatchStatus.IN_PROGRESS, {"team": "eval"}),
    ]
    assert report.matched == 4


async def test_a_dry_run_over_the_guard_still_reports_the_count_as_rejected() -> None:
    lister, sinks = FakeList(_population()), Sinks()
    report = await run_sweep(_selector(dry_run=True, max_batches=1), lister, sinks, sinks, None)
    assert report.outcome is SelectorOutcome.REJECTED and sinks.commands == []


@pytest.mark.parametrize(
    ("error", "outcome", "code"),
    [
        (Rejected(401, "invalid_api_key", "bad key"), SelectorOutcome.REJECTED, "invalid_api_key"),
        (Rejected(403, None, "forbidden"), SelectorOutcome.REJECTED, "list_refused"),
        (GaveUp("HTTP 503", 7), SelectorOutcome.GAVE_UP, "list_retries_exhausted"),
    ],
)
async def test_a_refused_or_failing_list_cancels_nothing(error: Exception, outcome: SelectorOutcome, code: str) -> None:
    lister, sinks = FakeList(_population(), fail=error), Sinks()
    report = await run_sweep(_selector(), lister, sinks, sinks, None)
    assert report.outcome is outcome and report.detail is not None and report.detail.code == code
    assert sinks.commands == []


async def test_a_cursor_that_does_not_advance_ends_the_walk_rejected() -> None:
    class Stuck(FakeList):
        async def list_page(self, account: str, f: ListFilter, cursor: str | None, *, page_size: int = 100) -> ListPage:
            await super().list_page(account, f, None)
            return ListPage(listed=1, batches=(), next_cursor="same")

    lister, sinks = Stuck(_population()), Sinks()
    report = await run_sweep(_selector(), lister, sinks, sinks, None)
    assert report.outcome is SelectorOutcome.REJECTED and report.detail is not None
    assert report.detail.code == "list_not_ending" and len(lister.calls) == 2 < MAX_PAGES


async def test_a_batch_listed_twice_is_counted_and_cancelled_once() -> None:
    population = _population()
    lister, sinks = FakeList([*population[:3], population[0], *population[3:]]), Sinks()
    report = await run_sweep(_selector(), lister, sinks, sinks, None)
    assert report.matched == 4 and len(sinks.commands) == 4


async def test_a_standing_kill_skips_batches_an_earlier_sweep_covered() -> None:
    lister, sinks = FakeList(_population()), Sinks()
    until = "2099-01-01T00:00:00Z"
    report = await run_sweep(
        _selector(until=until, max_batches=2), lister, sinks, sinks, None, skip={"batch_1", "batch_4"}
    )
    assert report.outcome is None and report.matched == 4
    assert [json.loads(v)["batch_id"] for _, v in sinks.commands] == ["batch_6", "batch_7"]


async def test_progress_events_every_ten_pages() -> None:
    lister, sinks = FakeList([_batch(n) for n in range(25)], size=1), Sinks()
    await run_sweep(_selector(max_batches=100), lister, sinks, sinks, None)
    assert [(e.pages, e.final) for e in sinks.events] == [(10, False), (20, False)]
    assert len({e.event_id for e in sinks.events}) == 2


def test_a_selector_final_has_one_id_whatever_its_counts() -> None:
    from worker.sweep.runner import SweepReport

    a = final_event(_selector(), SweepReport(sweep=1, outcome=None, matched=3), SelectorOutcome.EXPANDED)
    b = final_event(_selector(), SweepReport(sweep=1, outcome=None, matched=2), SelectorOutcome.EXPANDED)
    assert a.event_id == b.event_id


def test_criteria_reject_an_empty_window() -> None:
    with pytest.raises(ValueError, match="created_after must be earlier"):
        Criteria.model_validate({"created_after": "2026-01-02T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"})
