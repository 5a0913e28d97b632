"""The membership fence (``worker/kafka/membership.py``): a worker without an answered heartbeat for most of a
session stops acting on its partitions before the group can give them to another member, and takes them back
if the group never did. The cut-off worker on a real cluster is tests/reliability/test_cluster_network.py (29c)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.support.fake_kafka import FakeCommands, FakeConsumer, FakeFollowReader
from tests.support.waiting import until
from worker.config import Settings
from worker.kafka.consumer import CommandConsumer
from worker.kafka.membership import Membership, fence_after_s, observe_heartbeats

TOPIC = "batch-cancel.commands"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_fence_falls_a_margin_before_the_session_ends() -> None:
    assert fence_after_s(6.0) == pytest.approx(4.8)
    assert fence_after_s(10.0) == pytest.approx(8.0)
    assert fence_after_s(3.0) == pytest.approx(2.0), "a margin of one second at least"


def test_only_an_answered_heartbeat_proves_membership_from_when_it_was_sent() -> None:
    clock = Clock()
    m = Membership(6.0, now=clock)
    clock.t += 4.0
    m.proved(sent_at=clock.t - 3.0)  # answered now, sent 3 s ago: the coordinator saw it at most 3 s ago
    assert m.age == pytest.approx(3.0)
    m.proved(sent_at=clock.t - 3.5)  # an older proof never moves the clock back
    assert m.age == pytest.approx(3.0)
    clock.t += 1.8
    assert not m.lapsed()
    clock.t += 0.1
    assert m.lapsed()


class _Coordinator:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.answers: list[bool] = []

    async def _do_heartbeat(self) -> bool:
        self.clock.t += 0.5  # the round trip
        return self.answers.pop(0)


class _Consumer:
    def __init__(self, coordinator: _Coordinator | None) -> None:
        self._coordinator = coordinator


async def test_heartbeats_are_observed_and_a_failed_one_proves_nothing() -> None:
    clock = Clock()
    m = Membership(6.0, now=clock)
    coordinator = _Coordinator(clock)
    assert observe_heartbeats(_Consumer(coordinator), m)
    coordinator.answers = [True, False]
    start = clock.t
    assert await coordinator._do_heartbeat() is True
    assert m.age == pytest.approx(0.5), "proof dates from the send, not the answer"
    assert await coordinator._do_heartbeat() is False
    assert m.age == pytest.approx(1.0)
    assert clock.t == start + 1.0
    assert not observe_heartbeats(_Consumer(None), m), "no group coordinator: no fence, nothing changed"


@dataclass
class Fenced:
    consumer: CommandConsumer
    kafka: FakeConsumer
    commands: FakeCommands
    store: FakeFollowReader
    membership: Membership
    clock: Clock


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[Fenced]:
    settings = Settings(commands_topic=TOPIC, commit_interval_s=0.01, session_timeout_ms=6000)
    clock = Clock()
    membership = Membership(6.0, now=clock)
    kafka, commands, store = FakeConsumer(TOPIC), FakeCommands(), FakeFollowReader()
    consumer = CommandConsumer(settings, kafka, sink=commands, follows=commands, store=store, membership=membership)
    await consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield Fenced(consumer, kafka, commands, store, membership, clock)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


async def test_no_heartbeat_for_most_of_a_session_stops_the_partitions_follows_and_commits_nothing_more() -> None:
    async with running() as f:
        await f.kafka.assign(0, 1)
        await until(lambda: not f.kafka.paused, what="restore done")
        f.kafka.produce(0, 2)
        await until(lambda: f.commands.offsets_submitted(0) == [0, 1], what="both submitted")
        f.commands.finish(0, 0)
        await until(lambda: f.kafka.committed(0) == 1, what="offset 0 committed")
        f.clock.t += 4.7
        await asyncio.sleep(0.3)
        assert f.commands.stopped == [], "within the margin: nothing happens"
        f.clock.t += 0.2  # 4.9 s without proof, the fence is at 4.8 s of a 6 s session
        await until(lambda: f.commands.stopped == [[0, 1]], what="the follows of both partitions stopped")
        assert f.kafka.paused == {f.kafka.tp(0), f.kafka.tp(1)}
        f.commands.finish(0, 1)  # finished after the fence: the next owner decides, not this member
        f.kafka.produce(1, 3)
        commits = len(f.kafka.commits)
        await asyncio.sleep(0.3)
        assert len(f.kafka.commits) == commits and f.kafka.committed(0) == 1, f.kafka.commits
        assert f.commands.offsets_submitted(1) == [], "no command taken in for a fenced partition"


async def test_a_heartbeat_answered_after_the_fence_takes_the_partitions_back_from_the_committed_offset() -> None:
    async with running() as f:
        await f.kafka.assign(0)
        await until(lambda: not f.kafka.paused, what="restore done")
        f.kafka.produce(0, 2)
        await until(lambda: f.commands.offsets_submitted(0) == [0, 1], what="both submitted")
        f.commands.finish(0, 0)
        await until(lambda: f.kafka.committed(0) == 1, what="offset 0 committed")
        reads = f.store.reads
        f.clock.t += 5.0
        await until(lambda: f.commands.stopped == [[0]], what="fenced")
        f.membership.proved()  # the network came back before the session ended: still a member
        await until(lambda: f.store.reads == reads + 1, what="follows read again")
        await until(lambda: f.commands.offsets_submitted(0) == [0, 1, 1], what="offset 1 redelivered")
        assert f.kafka.committed(0) == 1
