"""The poll loop's rules against fakes of its seams: back-pressure, restore, revocation, drain, commit order.

``CommandConsumer`` is built on a ``FakeConsumer`` (aiokafka's side) and ``FakeCommands`` (the dispatcher's
side), so each rule is provoked exactly; tests/e2e and tests/reliability prove the same over a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiokafka.errors import CoordinatorNotAvailableError, GroupAuthorizationFailedError

from tests.support.fake_kafka import FakeCommands, FakeConsumer, FakeFollowReader, LeakyStop
from tests.support.waiting import until
from worker import retry
from worker.config import Settings
from worker.contract import FollowState, WaitingCommand
from worker.kafka.consumer import MAX_DEAD_LETTERING, CommandConsumer, kafka_consumer

TOPIC = "batch-cancel.commands"


@dataclass
class Loop:
    """A running ``CommandConsumer`` and its fakes; ``stop`` is the SIGTERM."""

    consumer: CommandConsumer
    kafka: FakeConsumer
    commands: FakeCommands
    store: FakeFollowReader
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running(
    *, max_in_flight: int = 100, store: FakeFollowReader | None = None, commands: FakeCommands | None = None
) -> AsyncIterator[Loop]:
    settings = Settings(commands_topic=TOPIC, commit_interval_s=0.01, max_in_flight=max_in_flight, shutdown_grace_s=5.0)
    kafka, commands, store = FakeConsumer(TOPIC), commands or FakeCommands(), store or FakeFollowReader()
    consumer = CommandConsumer(settings, kafka, sink=commands, follows=commands, store=store)
    await consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    loop = Loop(consumer, kafka, commands, store, stop, task)
    try:
        yield loop
    finally:
        stop.set()
        if commands.closing is not None:
            commands.closing.set()
        async with asyncio.timeout(10):
            await task


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    retry.set_testing(True)
    yield
    retry.set_testing(False)


async def test_records_reach_the_sink_in_order_and_only_a_finished_prefix_is_committed() -> None:
    async with running() as loop:
        await loop.kafka.assign(0)
        loop.kafka.produce(0, 3)
        await until(lambda: loop.commands.offsets_submitted(0) == [0, 1, 2], what="all three submitted")
        loop.commands.finish(0, 2)
        loop.commands.finish(0, 0)
        await until(lambda: loop.kafka.committed(0) == 1, what="offset 0 committed")
        polls = loop.kafka.polls
        await until(lambda: loop.kafka.polls > polls + 5, what="more commit ticks")
        assert loop.kafka.committed(0) == 1, "offset 2 finished, but 1 is still running: nothing past it commits"
        loop.commands.finish(0, 1)
        await until(lambda: loop.kafka.committed(0) == 3, what="the whole prefix committed")
        assert [c[loop.kafka.tp(0)] for c in loop.kafka.commits] == [1, 3], "each watermark committed once"


async def test_back_pressure_pauses_every_partition_and_keeps_polling_then_resumes_below_the_ratio() -> None:
    async with running(max_in_flight=10) as loop:
        await loop.kafka.assign(0, 1)
        await until(lambda: not loop.kafka.paused, what="restore done")
        loop.commands.in_flight = 10
        await until(lambda: loop.kafka.paused == {loop.kafka.tp(0), loop.kafka.tp(1)}, what="intake paused")
        polls = loop.kafka.polls
        loop.kafka.produce(0, 5)
        await until(lambda: loop.kafka.polls > polls + 20, what="polling while paused")
        assert loop.commands.submitted == [], "a paused member keeps polling (group membership) but takes nothing"
        loop.commands.in_flight = 9  # not below 90 % of the limit: stays paused
        polls = loop.kafka.polls
        await until(lambda: loop.kafka.polls > polls + 5, what="more polls")
        assert loop.kafka.paused and loop.commands.submitted == []
        loop.commands.in_flight = 8
        await until(lambda: len(loop.commands.submitted) == 5, what="intake resumed")
        assert not loop.kafka.paused


async def test_a_burst_of_undecoded_records_pauses_intake_whatever_the_in_flight_limit() -> None:
    async with running(max_in_flight=1_000_000) as loop:
        await loop.kafka.assign(0)
        await until(lambda: not loop.kafka.paused, what="restore done")
        loop.commands.dead_lettering = MAX_DEAD_LETTERING
        await until(lambda: loop.kafka.paused == {loop.kafka.tp(0)}, what="paused on intake")
        loop.commands.dead_lettering = 0
        await until(lambda: not loop.kafka.paused, what="resumed")


async def test_a_new_partition_takes_no_command_before_its_follows_are_resumed_and_a_failed_read_is_retried() -> None:
    now = datetime.now(UTC)
    waiting = WaitingCommand.model_validate({"command_id": "c1", "deadline": None, "last_status": None})
    state = FollowState(
        provider="p",
        account="a",
        batch_id="b1",
        cancel_accepted=True,
        last_status=None,
        since=now,
        updated_at=now,
        waiting=[waiting],
    )
    gate = asyncio.Event()
    store = FakeFollowReader(states={0: [state]}, failures=2, gate=gate)
    async with running(store=store) as loop:
        loop.kafka.produce(0, 2)
        await loop.kafka.assign(0)
        polls = loop.kafka.polls
        await until(lambda: loop.kafka.polls > polls + 20, what="polls while restoring")
        assert loop.kafka.paused == {loop.kafka.tp(0)} and loop.commands.submitted == []
        assert loop.commands.resumed == {}, "still reading"
        gate.set()
        await until(lambda: loop.commands.offsets_submitted(0) == [0, 1], what="commands after the restore")
        assert store.reads == 3, "two failed reads, then the one that worked"
        assert loop.commands.resumed == {0: [state]}


async def test_revocation_stops_the_follows_commits_what_is_finished_and_ignores_late_completions() -> None:
    async with running() as loop:
        await loop.kafka.assign(0, 1)
        loop.kafka.produce(0, 3)
        loop.kafka.produce(1, 1)
        await until(lambda: len(loop.commands.submitted) == 4, what="all submitted")
        loop.kafka.refuse_commits = 1_000_000  # nothing reaches the broker before the revocation
        loop.commands.finish(0, 0)
        loop.commands.finish(1, 0)
        polls = loop.kafka.polls
        await until(lambda: loop.kafka.polls > polls + 5, what="a few refused commit ticks")
        loop.kafka.refuse_commits = 0
        await loop.kafka.revoke(0)
        assert loop.commands.stopped == [[0]], "the revoked partition's follows stopped before its commit"
        assert loop.kafka.commits == [{loop.kafka.tp(0): 1}], "the revoke commits the revoked partition only"
        revoked_offsets = next(o for r, o in loop.commands.submitted if r.partition == 0)
        assert revoked_offsets.revoked
        loop.commands.finish(0, 1)  # work of the old assignment finishing late
        await until(lambda: loop.kafka.committed(1) == 1, what="partition 1 committed by the commit loop")
        assert loop.kafka.committed(0) == 1, "a late completion of revoked work never moves the watermark"


async def test_a_refused_commit_is_retried_on_the_next_tick() -> None:
    async with running() as loop:
        await loop.kafka.assign(0)
        loop.kafka.produce(0, 1)
        await until(lambda: len(loop.commands.submitted) == 1, what="submitted")
        loop.kafka.refuse_commits = 3
        loop.commands.finish(0, 0)
        await until(lambda: loop.kafka.committed(0) == 1, what="committed after three refusals")
        assert loop.kafka.refuse_commits == 0


async def test_commits_never_overlap_so_an_older_one_cannot_land_after_a_newer_one() -> None:
    async with running() as loop:
        await loop.kafka.assign(0)
        loop.kafka.produce(0, 2)
        await until(lambda: len(loop.commands.submitted) == 2, what="submitted")
        hold = loop.kafka.hold_commits = asyncio.Event()
        loop.commands.finish(0, 0)
        await until(lambda: loop.kafka.commits_held == 1, what="the commit of offset 1 on the wire")
        loop.commands.finish(0, 1)
        revoke = asyncio.create_task(loop.kafka.revoke(0))  # wants to commit offset 2 meanwhile
        await until(lambda: loop.commands.stopped == [[0]], what="the revoke reached its commit")
        polls = loop.kafka.polls
        await until(lambda: loop.kafka.polls > polls + 5, what="a few more polls")
        assert loop.kafka.commits_held == 1 and not revoke.done(), "the revoke's commit waits for the one on the wire"
        hold.set()
        async with asyncio.timeout(5):
            await revoke
        assert [c[loop.kafka.tp(0)] for c in loop.kafka.commits] == [1, 2]


async def test_shutdown_pauses_keeps_polling_while_draining_then_commits_and_leaves() -> None:
    closing = asyncio.Event()
    commands = FakeCommands(closing=closing, following=3)
    async with running(commands=commands) as loop:
        await loop.kafka.assign(0)
        loop.kafka.produce(0, 1)
        await until(lambda: len(commands.submitted) == 1, what="submitted")
        commands.finish(0, 0)
        loop.stop.set()
        await until(lambda: commands.closed == [5.0], what="the drain started with the configured grace")
        assert loop.kafka.paused == {loop.kafka.tp(0)}, "nothing new is taken in while draining"
        polls = loop.kafka.polls
        await until(lambda: loop.kafka.polls > polls + 20, what="polls during the drain (group membership)")
        assert not loop.kafka.stopped
        closing.set()
        async with asyncio.timeout(5):
            await loop.task
        assert loop.kafka.committed(0) == 1 and loop.kafka.stopped


async def test_a_coordinator_not_yet_available_at_start_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka_consumer(Settings())  # installs the filter on aiokafka's coordinator logger
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    with caplog.at_level(logging.INFO, logger=coordinator.name):
        coordinator.error("Group Coordinator Request failed: %s", CoordinatorNotAvailableError())
        coordinator.error("Group Coordinator Request failed: %s", GroupAuthorizationFailedError())
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == coordinator.name]
    assert levels[0][0] == "INFO" and "not available yet" in levels[0][1]
    assert levels[1][0] == "ERROR", "every other coordinator error keeps its level"


async def test_a_client_leaking_its_own_cancellation_from_stop_is_stopped_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from worker.kafka.connection import stop_client

    with pytest.raises(asyncio.CancelledError):  # what the follows reader did to a restore task
        await LeakyStop().stop()
    client = LeakyStop()
    with caplog.at_level(logging.WARNING, logger="worker.kafka"):
        await stop_client(client, "follows reader")
    assert client.stopped and client._client.closed  # and what stop() skipped was done
    assert "follows reader stopped uncleanly" in caplog.text


async def test_stopping_a_client_still_lets_a_real_cancellation_through() -> None:
    from worker.kafka.connection import stop_client

    client = LeakyStop(stop_takes=5.0)
    task = asyncio.create_task(stop_client(client, "consumer"))
    await client.stopping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled() and not client.stopped
