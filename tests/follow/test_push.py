"""A provider's push makes the follow poll at once; without one, a push follow waits at its safety interval."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests.support.fakes import FakeProvider, MakeDispatcher, Rec, Sink, command, submit_all
from tests.support.waiting import until
from worker.budget import Priority
from worker.contract import BatchSignal
from worker.follow.policy import FollowPolicy, polls_within
from worker.telemetry import metrics

PUSH = {("p", "default"): 3600.0}  # an hour: only a signal (or a newcomer) can end these follows in a test


def signal(batch: str = "batch_1", account: str = "default") -> BatchSignal:
    return BatchSignal(
        provider="p",
        account=account,
        batch_id=batch,
        event="batch.cancelled",
        delivery_id="wh_1",
        received_at=datetime.now(UTC),
    )


async def test_a_signal_polls_at_once_at_confirmation_priority_and_the_answer_decides(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider = FakeProvider(polls=["cancelling", "cancelled"])
    sink = Sink()
    d = make_dispatcher(provider, sink, push_intervals=PUSH)
    submit_all(d, [Rec(command("c1"), offset=0)])
    await until(lambda: provider.gets == 1)  # the cancel's confirmation: still cancelling
    assert d.follows.signal(signal()) is True
    await until(lambda: bool(sink.for_command("c1")) and sink.for_command("c1")[-1].final)
    assert provider.gets == 2 and provider.get_priorities == [Priority.CONFIRM, Priority.CONFIRM]
    assert sink.for_command("c1")[-1].outcome == "cancelled"


async def test_a_signal_whose_poll_still_sees_cancelling_does_not_end_the_follow(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider = FakeProvider(polls=["cancelling"])
    sink = Sink()
    d = make_dispatcher(provider, sink, push_intervals=PUSH)
    submit_all(d, [Rec(command("c1"), offset=0)])
    await until(lambda: provider.gets == 1)
    d.follows.signal(signal())
    await until(lambda: provider.gets == 2)
    assert not any(e.final for e in sink.events)  # a signal is a hint: the provider's answer said cancelling
    assert d.follows.following == 1


async def test_without_push_the_same_follow_polls_on_its_own(make_dispatcher: MakeDispatcher) -> None:
    """The control for the two above: with no push interval the follow ends without any signal."""
    provider = FakeProvider(polls=["cancelling", "cancelled"])
    sink = Sink()
    d = make_dispatcher(provider, sink)
    submit_all(d, [Rec(command("c1"), offset=0)])
    await until(lambda: bool(sink.for_command("c1")) and sink.for_command("c1")[-1].final)


async def test_a_signal_during_a_poll_on_the_wire_polls_again_after_it(make_dispatcher: MakeDispatcher) -> None:
    provider = FakeProvider(polls=["cancelling", "cancelling", "cancelled"])
    sink = Sink()
    d = make_dispatcher(provider, sink, push_intervals=PUSH)
    submit_all(d, [Rec(command("c1"), offset=0)])
    await until(lambda: provider.gets == 1)
    provider.retrieve_gate = asyncio.Event()
    d.follows.signal(signal())
    await until(lambda: provider.gets == 2)  # the signal's poll, held on the wire
    d.follows.signal(signal())  # a second push arrives meanwhile: that answer may predate it
    provider.retrieve_gate.set()
    await until(lambda: bool(sink.for_command("c1")) and sink.for_command("c1")[-1].final)
    assert provider.gets == 3


async def test_a_signal_for_a_batch_not_held_here_is_dropped(make_dispatcher: MakeDispatcher) -> None:
    provider = FakeProvider(polls=["cancelling"])
    d = make_dispatcher(provider, Sink(), push_intervals=PUSH)
    submit_all(d, [Rec(command("c1"), offset=0)])
    await until(lambda: provider.gets == 1)
    before = metrics.SIGNALS.labels("p", "not_held")._value.get()
    assert d.follows.signal(signal("batch_other")) is False
    assert d.follows.signal(signal(account="other")) is False
    assert metrics.SIGNALS.labels("p", "not_held")._value.get() == before + 2
    assert provider.gets == 1


def test_polls_within_counts_the_plain_backed_off_schedule() -> None:
    policy = FollowPolicy(initial_interval=1.0, max_interval=30.0, backoff=1.5)
    assert polls_within(0.5, 1.0, policy) == 0
    assert polls_within(1.0, 1.0, policy) == 1
    assert polls_within(2.5, 1.0, policy) == 2  # 1 + 1.5
    # 1, 1.5, 2.25, 3.375, 5.06, 7.59, 11.39, 17.09 (49.3 s in all), then 30 s each: 300 s holds 8 + 8
    assert polls_within(300.0, 1.0, policy) == 16
    assert polls_within(300.0, 30.0, policy) == 10


async def test_the_polls_a_signal_made_unnecessary_are_counted(make_dispatcher: MakeDispatcher) -> None:
    """FAST polls every 0.01-0.05 s: a follow that waits 0.3 s for its signal saved several of them."""
    provider = FakeProvider(polls=["cancelling", "cancelled"])
    sink = Sink()
    d = make_dispatcher(provider, sink, push_intervals=PUSH)
    before = metrics.PUSH_POLLS_SAVED.labels("p")._value.get()
    submit_all(d, [Rec(command("c1"), offset=0)])
    await until(lambda: provider.gets == 1)
    waited_from = asyncio.get_running_loop().time()
    await until(lambda: asyncio.get_running_loop().time() - waited_from > 0.3, timeout=2)
    d.follows.signal(signal())
    await until(lambda: bool(sink.for_command("c1")) and sink.for_command("c1")[-1].final)
    saved = metrics.PUSH_POLLS_SAVED.labels("p")._value.get() - before
    # 0.01 + 0.02 + 0.04, then 0.05 each: at least 6 plain polls fit in 0.3 s; the signal's poll is not saved.
    assert 5 <= saved <= 12, saved
