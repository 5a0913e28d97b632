"""In-process fakes of the poll loop's seams (``worker.kafka.seams``), for unit tests of ``CommandConsumer``.

``FakeConsumer`` plays the group member: it hands out queued records of assigned, unpaused partitions, counts
polls, records commits (and can refuse or hold them), and drives rebalances through the listener the consumer
subscribed with. ``FakeCommands`` is the dispatcher's side: it keeps what it was given and lets a test mark
records done. The end-to-end tests prove the same rules against a real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from worker.contract import FollowState, KillState
from worker.kafka.offsets import PartitionOffsets
from worker.record import Record

__all__ = ["FakeCommands", "FakeConsumer", "FakeFollowReader", "FakeRecord", "LeakyStop"]


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | None = b"{}"
    headers: Sequence[tuple[str, bytes]] = ()
    key: bytes | None = None
    timestamp: int = 0


class FakeConsumer:
    """Records per partition, a position per partition, pause/resume/seek as aiokafka means them."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.log: dict[int, list[FakeRecord]] = {}
        self.position: dict[TopicPartition, int] = {}
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.refuse_commits = 0  # the next N commits raise CommitFailedError (a rebalance in progress)
        self.hold_commits: asyncio.Event | None = None  # when set to an unset Event, commits wait for it
        self.polls = 0
        self.commits_held = 0  # commits waiting on ``hold_commits`` right now
        self.started = self.stopped = False
        self._listener: Any = None

    def produce(self, partition: int, count: int) -> list[FakeRecord]:
        records = self.log.setdefault(partition, [])
        new = [FakeRecord(self.topic, partition, len(records) + i) for i in range(count)]
        records.extend(new)
        return new

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    # --- rebalances, driven by the test -------------------------------------------------------------------
    async def assign(self, *partitions: int) -> None:
        tps = {self.tp(p) for p in partitions}
        self.assigned |= tps
        for tp in tps:
            self.position.setdefault(tp, 0)
        await self._listener.on_partitions_assigned(tps)

    async def revoke(self, *partitions: int) -> None:
        tps = {self.tp(p) for p in partitions}
        await self._listener.on_partitions_revoked(tps)
        self.assigned -= tps
        self.paused -= tps

    # --- ConsumerClient -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, topics: list[str], *, listener: Any) -> None:
        assert topics == [self.topic]
        self._listener = listener

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Record]]:
        self.polls += 1
        out: dict[TopicPartition, Sequence[Record]] = {}
        for tp in sorted(self.assigned - self.paused):
            records = self.log.get(tp.partition, [])[self.position[tp] :][: max_records or None]
            if records:
                out[tp] = records
                self.position[tp] = records[-1].offset + 1
        await asyncio.sleep(0 if out else 0.001)  # an empty poll waits a little, as a real one does
        return out

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.position[partition] = offset

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.hold_commits is not None:
            self.commits_held += 1
            await self.hold_commits.wait()
            self.commits_held -= 1
        if self.refuse_commits:
            self.refuse_commits -= 1
            raise CommitFailedError("a rebalance is in progress")
        self.commits.append(dict(offsets))

    async def seek_to_committed(self, *partitions: TopicPartition) -> dict[TopicPartition, int]:
        for tp in partitions:
            self.position[tp] = self.committed(tp.partition) or 0
        return {tp: self.position[tp] for tp in partitions}

    def committed(self, partition: int) -> int | None:
        """The last offset committed for ``partition``, as the broker would have it."""
        tp = self.tp(partition)
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)


@dataclass
class FakeCommands:
    """The dispatcher's side: a ``CommandSink`` and ``FollowOwner`` that only keeps what it is told."""

    in_flight: int = 0
    dead_lettering: int = 0
    following: int = 0
    submitted: list[tuple[Record, PartitionOffsets]] = field(default_factory=list)
    resumed: dict[int, list[FollowState | KillState]] = field(default_factory=dict)
    stopped: list[list[int]] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)
    intake_stopped: list[list[int] | None] = field(default_factory=list)
    closing: asyncio.Event | None = None  # when set to an unset Event, ``close(grace > 0)`` waits for it

    def submit(self, record: Record, offsets: PartitionOffsets) -> None:
        self.submitted.append((record, offsets))

    def finish(self, partition: int, offset: int) -> None:
        """Mark a submitted record done, as the dispatcher does once its outcome is durable."""
        record, offsets = next((r, o) for r, o in self.submitted if (r.partition, r.offset) == (partition, offset))
        if not offsets.revoked:
            offsets.finished(record.offset)

    def offsets_submitted(self, partition: int) -> list[int]:
        return [r.offset for r, _ in self.submitted if r.partition == partition]

    async def stop_intake(self, partitions: Sequence[int] | None = None) -> None:
        self.intake_stopped.append(None if partitions is None else list(partitions))

    def resume(self, partition: int, states: Iterable[FollowState | KillState]) -> int:
        self.resumed[partition] = list(states)
        return len(self.resumed[partition])

    async def stop_partitions(self, partitions: Sequence[int], grace: float) -> None:
        self.stopped.append(list(partitions))

    async def close(self, grace: float = 0.0) -> None:
        self.closed.append(grace)
        if grace > 0 and self.closing is not None:
            await self.closing.wait()


@dataclass
class FakeFollowReader:
    """The follow-state topic: what each partition holds; the first ``failures`` reads raise."""

    states: dict[int, list[FollowState]] = field(default_factory=dict)
    failures: int = 0
    reads: int = 0
    gate: asyncio.Event | None = None  # when set to an unset Event, reads wait for it

    async def read(self, partitions: Iterable[int]) -> Mapping[int, Sequence[FollowState]]:
        wanted = list(partitions)
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("broker unreachable")
        return {p: self.states.get(p, []) for p in wanted}


class _Connections:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class LeakyStop:
    """``AIOKafkaConsumer.stop`` in miniature (aio-libs/aiokafka#647): its fetcher cancels a fetch task that
    is waiting out a failed fetch, then awaits it, so that task's CancelledError comes out of ``stop()``
    before the connections (``_client``) are closed; ``stop()`` again does nothing."""

    def __init__(self, stop_takes: float = 0.0) -> None:
        self.stop_takes = stop_takes
        self.stopped = False
        self.stopping = asyncio.Event()
        self._client = _Connections()
        self._closed = False

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stopping.set()
        backoff = asyncio.create_task(asyncio.sleep(60))
        await asyncio.sleep(0)
        backoff.cancel()
        await asyncio.sleep(self.stop_takes)
        self.stopped = True
        await backoff
        await self._client.close()
