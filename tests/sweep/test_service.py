"""``Selectors`` with a fake list and fake sinks: offsets, finals, standing kills, lifts, ownership."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.waiting import until
from tests.sweep.test_runner import FakeList, Sinks, _population, _selector
from worker.contract import (
    DeadLetterReason,
    InvalidCommand,
    KillState,
    LiftCommand,
    SelectorOutcome,
    decode_kept,
    encode_kill_state,
)
from worker.providers.listing import ListFilter, UnsupportedCriterion
from worker.sweep.service import Selectors


class Lister(FakeList):
    budget = 1_000_000.0  # tests of pacing set a small one

    def check_filter(self, f: ListFilter) -> None:
        if f.model is not None:
            raise UnsupportedCriterion("anthropic", "model", "its list items carry no model")

    def request_budget(self, account: str) -> float:
        return self.budget


class Store:
    def __init__(self) -> None:
        self.writes: list[tuple[int, str, KillState | None]] = []

    async def write_kill(self, partition: int, key: str, state: KillState | None) -> None:
        self.writes.append((partition, key, state))


class Offsets:
    revoked = False

    def __init__(self) -> None:
        self.done: list[int] = []

    def finished(self, offset: int) -> None:
        self.done.append(offset)


class Rec:
    topic, partition, headers, key, timestamp = "commands", 3, (), None, 0

    def __init__(self, offset: int) -> None:
        self.offset, self.value = offset, b""


def _selectors(lister: Lister | None = None) -> tuple[Selectors, Sinks, Store]:
    sinks, store = Sinks(), Store()
    return Selectors({"openai": lister or Lister(_population())}, sinks, sinks, store), sinks, store


def _lift(kill_id: str = "kill-1") -> LiftCommand:
    return LiftCommand.model_validate(
        {
            "kind": "lift_kill",
            "command_id": "lift-1",
            "provider": "openai",
            "account": "team-a",
            "kill_id": kill_id,
            "reason": "budget raised",
            "requested_by": "alice",
        }
    )


def _finals(sinks: Sinks) -> list[tuple[str, SelectorOutcome | None]]:
    return [(e.command_id, e.outcome) for e in sinks.events if e.final]


async def test_a_one_shot_selector_marks_its_offset_only_after_children_and_final() -> None:
    selectors, sinks, store = _selectors()
    offsets = Offsets()
    selectors.take(Rec(7), offsets, _selector(), None)
    assert offsets.done == []
    await until(lambda: offsets.done == [7], what="offset done")
    assert len(sinks.commands) == 4 and _finals(sinks) == [("kill-1", SelectorOutcome.EXPANDED)]
    assert store.writes == []  # a one-shot selector keeps no record


async def test_an_unsupported_criterion_and_a_bad_until_are_refused_at_intake() -> None:
    selectors, _, _ = _selectors()
    with pytest.raises(InvalidCommand) as caught:
        selectors.check(_selector(match={"model": "gpt-4o"}))
    assert caught.value.reason is DeadLetterReason.UNSUPPORTED_CRITERION
    assert "anthropic cannot evaluate model" in caught.value.message
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    with pytest.raises(InvalidCommand, match="already passed"):
        selectors.check(_selector(until=past))


async def test_a_standing_kill_records_itself_then_ends_when_until_passes() -> None:
    selectors, sinks, store = _selectors()
    offsets = Offsets()
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    selectors.take(Rec(8), offsets, _selector(until=soon), None)
    await until(lambda: offsets.done == [8], what="offset done")
    first = store.writes[0][2]
    assert first is not None and first.sweeps == 1 and first.published == 4 and first.ended is None
    assert store.writes[0][:2] == (3, "openai/team-a/*/kill-1")
    assert len(selectors.standing) == 1 and _finals(sinks) == []
    await until(lambda: _finals(sinks) == [("kill-1", SelectorOutcome.ENDED)], timeout=10, what="kill ended")
    ended = store.writes[-2][2]
    assert ended is not None and ended.ended is not None and ended.ended.code == "until_passed"
    assert store.writes[-1] == (3, "openai/team-a/*/kill-1", None)  # tombstone after the final
    await until(lambda: not selectors.standing, what="kill forgotten")


async def test_a_lift_ends_its_kill_with_two_finals() -> None:
    selectors, sinks, store = _selectors()
    offsets = Offsets()
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    selectors.take(Rec(8), offsets, _selector(until=later), None)
    await until(lambda: offsets.done == [8], what="kill standing")
    selectors.take(Rec(9), offsets, _lift(), None)
    await until(lambda: offsets.done == [8, 9], what="lift done")
    assert _finals(sinks) == [("kill-1", SelectorOutcome.ENDED), ("lift-1", SelectorOutcome.LIFTED)]
    ended = next(e for e in sinks.events if e.outcome is SelectorOutcome.ENDED)
    assert ended.detail is not None and ended.detail.code == "lifted" and "alice" in ended.detail.message
    assert store.writes[-1][2] is None and not selectors.standing


async def test_a_lift_of_an_unknown_kill_is_rejected() -> None:
    selectors, sinks, _ = _selectors()
    offsets = Offsets()
    selectors.take(Rec(9), offsets, _lift("nope"), None)
    await until(lambda: offsets.done == [9], what="lift done")
    event = sinks.events[-1]
    assert event.outcome is SelectorOutcome.REJECTED and event.detail is not None
    assert event.detail.code == "no_such_kill"


async def test_a_restored_kill_sweeps_at_once_and_skips_nothing_it_never_saw() -> None:
    lister = Lister(_population())
    selectors, sinks, store = _selectors(lister)
    now = datetime.now(UTC)
    state = KillState(
        selector=_selector(until=(now + timedelta(days=1)).isoformat()),
        sweeps=4,
        published=9,
        started_at=now,
        updated_at=now,
    )
    assert decode_kept(encode_kill_state(state)) == state
    assert selectors.resume(3, [state]) == 1
    await until(lambda: any(s is not None and s.sweeps == 5 for _, _, s in store.writes), what="sweep 5")
    assert len(sinks.commands) == 4
    progress = [e for e in sinks.events if not e.final][-1]
    assert (progress.sweep, progress.published, progress.standing) == (5, 13, True)
    await selectors.stop_partitions([3], grace=0.1)
    assert not selectors.standing
    assert store.writes[-1][2] is not None  # a move keeps the record: the next owner sweeps on


async def test_a_restored_kill_that_had_ended_is_finished_not_swept() -> None:
    lister = Lister(_population())
    selectors, sinks, store = _selectors(lister)
    now = datetime.now(UTC)
    state = KillState(
        selector=_selector(until=(now + timedelta(days=1)).isoformat()),
        sweeps=2,
        published=3,
        started_at=now,
        updated_at=now,
        ended={"code": "lifted", "message": "lifted by alice: done"},
    )
    selectors.resume(3, [state])
    await until(lambda: store.writes and store.writes[-1][2] is None, what="tombstone")
    assert lister.calls == [] and _finals(sinks) == [("kill-1", SelectorOutcome.ENDED)]


async def test_revocation_stops_a_selector_in_flight_without_marking_its_offset() -> None:
    class Slow(Lister):
        async def list_page(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(30)

    selectors, sinks, _ = _selectors(Slow(_population()))
    offsets = Offsets()
    selectors.take(Rec(7), offsets, _selector(), None)
    started = time.monotonic()
    await selectors.stop_partitions([3], grace=0.1)
    assert time.monotonic() - started < 5 and offsets.done == [] and sinks.events == []


async def test_a_bug_in_a_sweep_ends_the_selector_gave_up_and_frees_its_offset() -> None:
    class Broken(Lister):
        async def list_page(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyError("a bug")

    selectors, sinks, _ = _selectors(Broken(_population()))
    offsets = Offsets()
    selectors.take(Rec(7), offsets, _selector(), None)
    await until(lambda: offsets.done == [7], what="offset done")
    final = sinks.events[-1]
    assert final.outcome is SelectorOutcome.GAVE_UP and final.detail is not None
    assert final.detail.code == "internal_error" and "KeyError" in final.detail.message


async def test_a_criterion_only_the_answer_shows_unsupported_ends_rejected() -> None:
    class Groq(Lister):
        async def list_page(self, *args: Any, **kwargs: Any) -> Any:
            raise UnsupportedCriterion("groq", "model", "its list items carry no model")

    selectors, sinks, _ = _selectors(Groq(_population()))
    offsets = Offsets()
    selectors.take(Rec(7), offsets, _selector(), None)
    await until(lambda: offsets.done == [7], what="offset done")
    final = sinks.events[-1]
    assert final.outcome is SelectorOutcome.REJECTED and final.detail is not None
    assert final.detail.code == "unsupported_criterion" and sinks.commands == []


async def test_children_are_paced_by_the_accounts_budget_after_a_burst() -> None:
    """At a budget of 1/s the allowance is 2/s after a burst of 20: 24 matches take at least two seconds, and the
    selector's offset waits for the last child."""
    from tests.sweep.test_runner import _batch

    lister = Lister([_batch(n) for n in range(24)], size=100)
    lister.budget = 1.0
    selectors, sinks, _ = _selectors(lister)
    offsets = Offsets()
    started = time.monotonic()
    selectors.take(Rec(7), offsets, _selector(max_batches=100), None)
    await until(lambda: offsets.done == [7], timeout=10, what="the paced rest")
    # A lower bound only: the last 4 children cannot go before 2 s of allowance (a slow machine only adds).
    assert len(sinks.commands) == 24 and time.monotonic() - started >= 1.5
