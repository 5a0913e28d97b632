"""Dispatch and follow logic against in-process fakes of the provider, the event sink and the state sink.

The end-to-end and reliability tests prove the same paths over a real broker and real HTTP; these pin the
rules that are hard to provoke there: shared follows, deadlines, late joiners, commit at intent, resuming
from a follow-state record, redeliveries joining a resumed follow, the bound on waiting commands.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.fakes import FAST, FakeProvider, MakeDispatcher, Rec, Sink, States, command, submit_all
from tests.support.waiting import until
from worker.budget import Priority
from worker.contract import (
    BatchStatus,
    DeadLetterReason,
    Outcome,
)
from worker.dispatch import Dispatcher
from worker.errors import GaveUp, Rejected
from worker.follow import FollowPolicy, Follows, next_interval


async def test_cancel_then_follow_publishes_each_change_then_one_final(make_dispatcher: MakeDispatcher) -> None:
    provider, sink = FakeProvider(polls=["cancelling", "cancelling", "cancelled"]), Sink()
    d = make_dispatcher(provider, sink)
    offsets = submit_all(d, [Rec(command("c1"))])
    await until(lambda: offsets.to_commit() == 1 and any(e.final for e in sink.events))
    events = sink.for_command("c1")
    assert [(e.status, e.previous_status, e.final) for e in events] == [
        (BatchStatus.CANCELLING, None, False),
        (BatchStatus.CANCELLED, BatchStatus.CANCELLING, True),
    ]
    assert events[-1].outcome == Outcome.CANCELLED
    assert provider.cancels == 1


async def test_two_commands_for_one_batch_share_one_cancel_and_both_finish(make_dispatcher: MakeDispatcher) -> None:
    provider, sink = FakeProvider(polls=["cancelling"] * 5 + ["cancelled"]), Sink()
    d = make_dispatcher(provider, sink)
    offsets = submit_all(d, [Rec(command("a"), offset=0), Rec(command("b"), offset=1)])
    await until(lambda: offsets.to_commit() == 2 and sum(e.final for e in sink.events) == 2)
    assert provider.cancels == 1
    for cid in ("a", "b"):
        finals = [e for e in sink.for_command(cid) if e.final]
        assert len(finals) == 1 and finals[0].outcome == Outcome.CANCELLED


async def test_a_following_command_is_committable_once_its_intent_is_durable() -> None:
    slow = FakeProvider(polls=["cancelling"] * 1000)
    sink, states = Sink(), States()
    providers = {"p": slow, "q": FakeProvider(cancel_status="cancelled")}
    accounts = {"p": frozenset({"default"}), "q": frozenset({"default"})}
    d = Dispatcher(providers, accounts, sink, Follows(providers, accounts, sink, states, FAST), max_command_bytes=65536)
    quick = json.dumps({"command_id": "quick", "provider": "q", "batch_id": "b2"}).encode()
    offsets = submit_all(d, [Rec(command("slow"), offset=0), Rec(quick, offset=1)])
    await until(lambda: offsets.to_commit() == 2)  # lag is intake, not batches that are merely cancelling
    assert not any(e.final for e in sink.for_command("slow"))
    state = states.latest()
    assert state is not None and [w.command_id for w in state.waiting] == ["slow"]
    assert d.in_flight == 1
    await d.follows.close()


async def test_without_a_durable_intent_the_offset_waits_for_the_final_event(make_dispatcher: MakeDispatcher) -> None:
    provider, sink, states = FakeProvider(polls=["cancelling"] * 20 + ["cancelled"]), Sink(), States()
    states.hold.clear()  # the follow-state topic never acknowledges
    offsets = submit_all(make_dispatcher(provider, sink, states), [Rec(command("c1"))])
    await until(lambda: provider.gets > 3)
    assert offsets.to_commit() is None
    await until(lambda: offsets.to_commit() == 1 and any(e.final for e in sink.events))
    assert [e.final for e in sink.for_command("c1")][-1]


async def test_rejected_cancel_is_final_with_status_and_message(make_dispatcher: MakeDispatcher) -> None:
    provider = FakeProvider(cancel_error=Rejected(http_status=401, code=None, message="Invalid token"))
    sink = Sink()
    offsets = submit_all(make_dispatcher(provider, sink), [Rec(command("r"))])
    await until(lambda: offsets.to_commit() == 1 and any(e.final for e in sink.events))
    (final,) = sink.for_command("r")
    assert final.final and final.outcome == Outcome.REJECTED
    assert final.detail is not None and final.detail.http_status == 401 and final.detail.message == "Invalid token"


async def test_retries_exhausted_is_final_gave_up(make_dispatcher: MakeDispatcher) -> None:
    provider = FakeProvider(cancel_error=GaveUp(cause="503 code 50505 x7", attempts=7))
    sink = Sink()
    offsets = submit_all(make_dispatcher(provider, sink), [Rec(command("g"))])
    await until(lambda: offsets.to_commit() == 1 and any(e.final for e in sink.events))
    (final,) = sink.for_command("g")
    assert final.outcome == Outcome.GAVE_UP and final.detail is not None and "50505" in final.detail.message


async def test_follow_timeout_gives_up_with_the_last_status(make_dispatcher: MakeDispatcher) -> None:
    provider, sink = FakeProvider(polls=["cancelling"] * 10_000), Sink()
    offsets = submit_all(make_dispatcher(provider, sink), [Rec(command("t", follow_timeout_s=0.2))])
    await until(lambda: offsets.to_commit() == 1 and any(e.final for e in sink.events))
    final = sink.for_command("t")[-1]
    assert final.outcome == Outcome.GAVE_UP
    assert final.detail is not None and final.detail.code == "follow_timeout"
    assert sum(e.final for e in sink.for_command("t")) == 1


async def test_no_follow_reports_the_cancel_reply_as_final(make_dispatcher: MakeDispatcher) -> None:
    provider, sink = FakeProvider(), Sink()
    offsets = submit_all(make_dispatcher(provider, sink), [Rec(command("n", follow=False))])
    await until(lambda: offsets.to_commit() == 1 and any(e.final for e in sink.events))
    (final,) = sink.for_command("n")
    assert final.final and final.status == BatchStatus.CANCELLING
    assert provider.gets == 0


async def test_already_terminal_batch_is_reported_as_such(make_dispatcher: MakeDispatcher) -> None:
    provider, sink = FakeProvider(cancel_status="completed", already_terminal=True), Sink()
    offsets = submit_all(make_dispatcher(provider, sink), [Rec(command("done"))])
    await until(lambda: offsets.to_commit() == 1 and any(e.final for e in sink.events))
    (final,) = sink.for_command("done")
    assert final.outcome == Outcome.COMPLETED and final.already_terminal


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", DeadLetterReason.INVALID_JSON),
        (b"{not json", DeadLetterReason.INVALID_JSON),
        (
            json.dumps({"command_id": "x", "provider": "nope", "batch_id": "b"}).encode(),
            DeadLetterReason.UNKNOWN_PROVIDER,
        ),
        (command("x", account="other"), DeadLetterReason.UNKNOWN_ACCOUNT),
        (
            json.dumps({"command_id": "x", "provider": "p", "batch_id": "../../x"}).encode(),
            DeadLetterReason.INVALID_BATCH_ID,
        ),
    ],
)
async def test_invalid_commands_are_dead_lettered_and_never_reach_the_provider(
    make_dispatcher: MakeDispatcher, value: bytes, reason: DeadLetterReason
) -> None:
    provider, sink = FakeProvider(), Sink()
    offsets = submit_all(make_dispatcher(provider, sink), [Rec(value)])
    await until(lambda: offsets.to_commit() == 1)
    assert [(r.value, why) for r, why, _ in sink.dead] == [(value, reason)]
    assert provider.cancels == 0
    if b'"command_id"' in value:
        (final,) = sink.for_command("x")
        assert final.outcome == Outcome.INVALID


async def test_a_stopped_partition_hands_its_follows_over_without_a_final_event(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink, states = FakeProvider(polls=["cancelling"] * 10_000), Sink(), States()
    d = make_dispatcher(provider, sink, states)
    offsets = submit_all(d, [Rec(command("long"))])
    await until(lambda: provider.gets > 2)
    await d.follows.stop_partitions([0], grace=5)
    assert d.in_flight == 0 and d.follows.following == 0
    assert not any(e.final for e in sink.events)
    state = states.latest()
    assert state is not None and state.cancel_accepted and state.last_status == BatchStatus.CANCELLING
    assert [w.command_id for w in state.waiting] == ["long"]
    assert offsets.to_commit() == 1  # the next owner resumes it from the state


def test_poll_interval_backs_off_and_resets_on_change() -> None:
    p = FollowPolicy(initial_interval=1, max_interval=30, backoff=2)
    assert next_interval(1, False, p) == 2
    assert next_interval(16, False, p) == 30
    assert next_interval(30, True, p) == 1


class BrokenVerifier:
    """Stands in for any bug on the command path (here: in signature checking)."""

    def verify(self, record: Any, command: Any) -> None:
        raise RuntimeError("a bug, with details that must stay in the log")


async def test_a_bug_parks_the_record_in_the_dlq_instead_of_stalling_its_partition(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink = FakeProvider(), Sink()
    d = make_dispatcher(provider, sink, accounts=frozenset({"default"}), verifier=BrokenVerifier())
    offsets = submit_all(d, [Rec(command("boom"), offset=0), Rec(command("next", batch="b2"), offset=1)])
    await until(lambda: offsets.to_commit() == 2)
    assert [(why, r.offset) for r, why, _ in sink.dead] == [
        (DeadLetterReason.INTERNAL_ERROR, 0),
        (DeadLetterReason.INTERNAL_ERROR, 1),
    ]
    assert all("RuntimeError" in message and "details" not in message for _, _, message in sink.dead)
    finals = [e for e in sink.events if e.final]
    assert sorted(e.command_id for e in finals) == ["boom", "next"]
    assert {e.outcome for e in finals} == {Outcome.INVALID}
    assert provider.cancels == 0


class _TracingProvider(FakeProvider):
    """Records the trace current while each batch's cancel is on the wire."""

    def __init__(self) -> None:
        super().__init__(polls=["cancelled"])
        self.trace_of: dict[str, str] = {}

    async def cancel(self, account: str, batch_id: str, *, priority: Priority = Priority.CANCEL) -> Any:
        from opentelemetry import trace

        self.trace_of[batch_id] = format(trace.get_current_span().get_span_context().trace_id, "032x")
        return await super().cancel(account, batch_id, priority=priority)


async def test_each_command_keeps_its_own_trace_in_provider_calls_and_its_log_line(
    make_dispatcher: MakeDispatcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scheduler and the state writers start while the first command is taken in; they must not carry its
    trace into every later command's provider calls and log lines."""
    traces = {"a": "0af7651916cd43dd8448eb211c80319c", "b": "4bf92f3577b34da6a3ce929d0e0e4736"}
    records = [
        Rec(
            command(cid, batch=f"batch_{cid}"),
            offset=i,
            headers=[("traceparent", f"00-{t}-b7ad6b7169203331-01".encode())],
        )
        for i, (cid, t) in enumerate(traces.items())
    ]
    provider, sink = _TracingProvider(), Sink()
    d = make_dispatcher(provider, sink)
    caplog.set_level("INFO", logger="worker.dispatch")
    offsets = submit_all(d, records)
    await until(lambda: offsets.to_commit() == 2 and sum(e.final for e in sink.events) == 2)
    assert provider.trace_of == {"batch_a": traces["a"], "batch_b": traces["b"]}
    finished = {
        r.__dict__["command_id"]: r.__dict__["trace_id"]
        for r in caplog.records
        if r.__dict__.get("event") == "command_finished"
    }
    assert finished == traces
    await d.follows.close()
