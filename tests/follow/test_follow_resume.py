"""Resuming follows from their follow-state records, against in-process fakes (the reliability suite proves
the same over a real broker with separate worker processes): no second cancel, nothing told twice, the
same trace, wall-clock deadlines, redeliveries joining, bounded records, ordered writes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tests.support.fakes import FAST, FakeProvider, MakeDispatcher, Rec, Sink, States, command, submit_all
from tests.support.waiting import until
from worker.contract import MAX_WAITING, BatchStatus, FollowState, Outcome, WaitingCommand
from worker.kafka.offsets import PartitionOffsets
from worker.telemetry import trace_carrier

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def state(
    *waiting: WaitingCommand, accepted: bool = True, last: BatchStatus | None = BatchStatus.CANCELLING
) -> FollowState:
    now = datetime.now(UTC)
    return FollowState(
        provider="p",
        account="default",
        batch_id="batch_1",
        cancel_accepted=accepted,
        last_status=last,
        provider_status=last.value if last else None,
        since=now - timedelta(seconds=1),
        updated_at=now,
        waiting=list(waiting),
    )


def waiting(cid: str, told: BatchStatus | None = BatchStatus.CANCELLING, **extra: object) -> WaitingCommand:
    fields: dict[str, object] = {"command_id": cid, "deadline": None, "last_status": told, **extra}
    return WaitingCommand.model_validate(fields)


async def test_a_resumed_follow_does_not_cancel_again_and_tells_only_what_is_new(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink, states = FakeProvider(polls=["cancelling", "cancelling", "cancelled"]), Sink(), States()
    d = make_dispatcher(provider, sink, states)
    assert d.follows.resume(0, [state(waiting("c1", traceparent=TRACEPARENT))]) == 1
    await until(lambda: any(e.final for e in sink.events))
    assert provider.cancels == 0
    [final] = sink.for_command("c1")  # no repeat of "cancelling", which c1 was already told
    assert final.outcome == Outcome.CANCELLED and final.previous_status == BatchStatus.CANCELLING
    await until(lambda: states.writes and states.writes[-1][2] is None)  # the tombstone, same partition
    assert states.writes[-1][:2] == (0, "p/default/batch_1")
    assert d.follows.following == 0 and d.in_flight == 0


async def test_events_after_a_move_continue_the_original_trace(make_dispatcher: MakeDispatcher) -> None:
    provider, states = FakeProvider(polls=["cancelled"]), States()
    contexts: list[object] = []

    class Recording(Sink):
        async def publish(self, event: object, context: object) -> None:
            contexts.append(context)
            await super().publish(event, context)  # type: ignore[arg-type]

    sink = Recording()
    make_dispatcher(provider, sink, states).follows.resume(0, [state(waiting("c1", traceparent=TRACEPARENT))])
    await until(lambda: bool(sink.events))
    assert trace_carrier(contexts[0])["traceparent"] == TRACEPARENT


async def test_a_cancel_not_yet_accepted_is_sent_by_the_new_owner(make_dispatcher: MakeDispatcher) -> None:
    provider, sink = FakeProvider(polls=["cancelled"]), Sink()
    make_dispatcher(provider, sink).follows.resume(0, [state(waiting("c1", told=None), accepted=False, last=None)])
    await until(lambda: any(e.final for e in sink.events))
    assert provider.cancels == 1
    assert [e.status for e in sink.for_command("c1")] == [BatchStatus.CANCELLING, BatchStatus.CANCELLED]


async def test_a_deadline_is_wall_clock_and_survives_the_move(make_dispatcher: MakeDispatcher) -> None:
    provider, sink = FakeProvider(polls=["cancelling"] * 10_000), Sink()
    past = datetime.now(UTC) - timedelta(seconds=1)
    make_dispatcher(provider, sink).follows.resume(0, [state(waiting("late", deadline=past))])
    await until(lambda: any(e.final for e in sink.events))
    [final] = sink.for_command("late")
    assert final.outcome == Outcome.GAVE_UP and final.detail is not None and final.detail.code == "follow_timeout"


async def test_a_redelivered_command_joins_its_resumed_entry_instead_of_starting_again(
    make_dispatcher: MakeDispatcher,
) -> None:
    """The crash came after the state naming c1 was written and before c1's offset was committed."""
    provider, sink = FakeProvider(polls=["cancelling"] * 20 + ["cancelled"]), Sink()
    d = make_dispatcher(provider, sink)
    d.follows.resume(0, [state(waiting("c1"))])
    offsets = submit_all(d, [Rec(command("c1"), offset=7)])
    await until(lambda: offsets.to_commit() == 8)  # released at once: its intent is already durable
    await until(lambda: any(e.final for e in sink.events))
    assert provider.cancels == 0
    assert [e.status for e in sink.for_command("c1")] == [BatchStatus.CANCELLED]
    assert d.in_flight == 0


async def test_a_newcomer_on_a_resumed_follow_hears_the_state_without_a_second_cancel(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink = FakeProvider(polls=["cancelling"] * 10_000), Sink()
    d = make_dispatcher(provider, sink)
    d.follows.resume(0, [state(waiting("old"))])
    submit_all(d, [Rec(command("new"), offset=1)])
    await until(lambda: bool(sink.for_command("new")))
    assert provider.cancels == 0
    assert [e.status for e in sink.for_command("new")] == [BatchStatus.CANCELLING]
    assert sink.for_command("old") == []
    await d.follows.close()


async def test_a_record_holds_at_most_max_waiting_commands_and_the_rest_commit_at_their_final(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink, states = FakeProvider(polls=["cancelling"] * 60 + ["cancelled"]), Sink(), States()
    d = make_dispatcher(provider, sink, states)
    records = [Rec(command(f"c{i}"), offset=i) for i in range(MAX_WAITING + 1)]
    offsets = submit_all(d, records)
    await until(lambda: offsets.to_commit() == MAX_WAITING)  # the last one is not in the record
    largest = max(len(s.waiting) for _, _, s in states.writes if s is not None)
    assert largest == MAX_WAITING
    assert max(len(s.model_dump_json()) for _, _, s in states.writes if s is not None) < 32 * 1024
    await until(lambda: offsets.to_commit() == MAX_WAITING + 1, timeout=10)
    assert all(e.outcome == Outcome.CANCELLED for e in sink.events if e.final)
    assert sum(e.final for e in sink.events) == MAX_WAITING + 1


async def test_a_new_follow_of_a_batch_writes_after_the_tombstone_of_the_previous_one(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink, states = FakeProvider(cancel_status="cancelled", polls=["cancelled"]), Sink(), States()
    d = make_dispatcher(provider, sink, states, replace(FAST, intent_delay=0))  # every follow writes its intent at once
    offsets = submit_all(d, [Rec(command("a"), offset=0)])
    await until(lambda: offsets.to_commit() == 1)
    states.hold.clear()  # the first follow's tombstone is slow to be acknowledged ...
    await asyncio.sleep(0)
    submit_all_more = [Rec(command("b"), offset=1)]
    for r in submit_all_more:
        offsets.started(r.offset)
        d.submit(r, offsets)
    await until(lambda: bool(sink.for_command("b")))
    states.hold.set()
    await until(lambda: offsets.to_commit() == 2)
    await until(lambda: d.follows.following == 0)
    kinds = [(s is None, [w.command_id for w in s.waiting] if s else None) for _, _, s in states.writes]
    assert kinds[-1] == (True, None), kinds  # ... and the compacted topic ends with no live follow


def test_the_state_record_round_trips_and_rejects_unknown_fields() -> None:
    s = state(waiting("c1", traceparent=TRACEPARENT))
    again = FollowState.model_validate_json(s.model_dump_json())
    assert again == s
    raw = json.loads(s.model_dump_json()) | {"surprise": 1}
    try:
        FollowState.model_validate(raw)
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown field must be refused")


async def test_resuming_an_unconfigured_provider_is_logged_not_crashed(make_dispatcher: MakeDispatcher) -> None:
    d = make_dispatcher(FakeProvider(), Sink())
    orphan = state(waiting("c1")).model_copy(update={"provider": "gone"})
    assert d.follows.resume(0, [orphan]) == 0
    assert d.follows.following == 0
    assert FAST.initial_interval > 0


async def test_a_cancel_answered_at_once_writes_one_state_with_the_answer_and_then_the_tombstone(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink, states = FakeProvider(polls=["cancelling", "cancelled"]), Sink(), States()
    d = make_dispatcher(provider, sink, states, replace(FAST, intent_delay=5.0))
    offsets = submit_all(d, [Rec(command("a"))])
    await until(lambda: offsets.to_commit() == 1)
    first = states.writes[0][2]  # the intent waited for the cancel's answer ...
    assert first is not None and first.cancel_accepted and first.waiting[0].last_status == BatchStatus.CANCELLING
    assert not sink.for_command("a")[-1].final  # ... and the offset was released by it, not by the final
    await until(lambda: d.follows.following == 0)
    assert [s is None for _, _, s in states.writes] == [False, True]
    await d.follows.close()


async def test_a_batch_finished_at_the_cancel_writes_no_state_and_commits_at_its_final(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink, states = FakeProvider(cancel_status="cancelled"), Sink(), States()
    d = make_dispatcher(provider, sink, states, replace(FAST, intent_delay=5.0))
    offsets = submit_all(d, [Rec(command("a"))])
    await until(lambda: offsets.to_commit() == 1 and d.follows.following == 0)
    assert [e.outcome for e in sink.for_command("a")] == [Outcome.CANCELLED]
    assert states.writes == []  # nothing was written, so nothing needs a tombstone
    await d.follows.close()


async def test_a_cancel_not_answered_within_the_delay_gets_its_intent_written_so_commits_move(
    make_dispatcher: MakeDispatcher,
) -> None:
    answer = asyncio.Event()
    provider, sink, states = FakeProvider(cancel_gate=answer), Sink(), States()
    d = make_dispatcher(provider, sink, states, replace(FAST, intent_delay=0.05))
    offsets = submit_all(d, [Rec(command("a"))])
    await until(lambda: offsets.to_commit() == 1)
    (intent,) = [s for _, _, s in states.writes]
    assert intent is not None and not intent.cancel_accepted and [w.command_id for w in intent.waiting] == ["a"]
    answer.set()
    await until(lambda: d.follows.following == 0)
    assert [e.outcome for e in sink.for_command("a") if e.final] == [Outcome.CANCELLED]
    assert states.writes[-1][2] is None
    await d.follows.close()


async def test_a_follow_stopped_before_its_intent_is_written_leaves_its_command_to_be_redelivered(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink, states = FakeProvider(cancel_gate=asyncio.Event()), Sink(), States()  # never answers
    d = make_dispatcher(provider, sink, states, replace(FAST, intent_delay=0.05))
    offsets = submit_all(d, [Rec(command("a"))])
    await d.follows.stop_partitions([0], grace=0.2)  # waits out the grace (the cancel hangs), 4x the intent delay
    assert states.writes == [] and offsets.to_commit() is None
    await d.follows.close()


async def test_a_command_joining_while_the_intent_is_on_the_wire_gets_its_own_entry_written_in_time(
    make_dispatcher: MakeDispatcher,
) -> None:
    answer = asyncio.Event()
    provider, sink, states = FakeProvider(cancel_gate=answer), Sink(), States()
    d = make_dispatcher(provider, sink, states, replace(FAST, intent_delay=0.05))
    offsets = PartitionOffsets()
    offsets.started(0)
    offsets.started(1)
    states.hold.clear()  # the intent of "a" is slow to be acknowledged ...
    d.submit(Rec(command("a"), offset=0), offsets)
    follow = next(iter(d.follows._follows.values()))
    await until(lambda: follow._writing)
    d.submit(Rec(command("b"), offset=1), offsets)  # ... and "b" joins while it is on the wire
    states.hold.set()
    await until(lambda: offsets.to_commit() == 2)  # both may commit, the cancel still unanswered
    assert [[w.command_id for w in s.waiting] for _, _, s in states.writes if s] == [["a"], ["a", "b"]]
    answer.set()
    await until(lambda: d.follows.following == 0)
    await d.follows.close()
