"""What the poll loop (``consumer.py``) needs from Kafka and from the rest of the worker, as small protocols.

``CommandConsumer`` is written against these rather than against ``AIOKafkaConsumer`` and the ``Dispatcher``,
so its rules (back-pressure, revocation, drain, commit order) are unit-tested with fakes
(tests/kafka/test_consumer.py) and the Kafka plumbing does not reach up into the code that handles commands.

* ``ConsumerClient``: the part of aiokafka's ``AIOKafkaConsumer`` the loop calls (``consumer.kafka_consumer``
  builds the real one).
* ``CommandSink``: where fetched records go (the ``Dispatcher``), with the partition's ``PartitionOffsets`` on
  which the sink marks each record done (``finished``) once its intent or its outcome is durable; it also says
  how much is in flight.
* ``FollowOwner``: who keeps a partition's follows (``worker.follow.Follows``): resumes them on assignment,
  stops them on revocation.
* ``FollowReader``: reads a partition's follows back from the follow-state topic (``FollowStore``).

The worker passes its ``Dispatcher`` as the sink and its ``Follows`` as the follow owner (app.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import TopicPartition

from worker.contract import FollowState, KillState
from worker.kafka.offsets import PartitionOffsets
from worker.record import Record

__all__ = ["CommandSink", "ConsumerClient", "FollowOwner", "FollowReader"]


class ConsumerClient(Protocol):
    """The calls ``CommandConsumer`` makes on ``AIOKafkaConsumer`` (same names, same meaning)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def subscribe(self, topics: list[str], *, listener: Any) -> None: ...
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Record]]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    async def seek_to_committed(self, *partitions: TopicPartition) -> Any: ...


class CommandSink(Protocol):
    """Takes each fetched record without blocking the poll loop, and marks it done on ``offsets`` later."""

    @property
    def in_flight(self) -> int:
        """Commands taken in and not yet final: intake pauses at ``Settings.max_in_flight``."""
        ...

    @property
    def dead_lettering(self) -> int:
        """Records handed over and still being dead-lettered (a valid command is taken in within ``submit``)."""
        ...

    def submit(self, record: Record, offsets: PartitionOffsets) -> None: ...

    async def stop_intake(self, partitions: Sequence[int] | None = None) -> None:
        """Revocation (these partitions) or shutdown (``None``, all): records still being dead-lettered stop
        and stay uncommitted; the next owner takes them in again."""
        ...


class FollowOwner(Protocol):
    """Keeps the follows of the partitions this member owns."""

    @property
    def following(self) -> int: ...

    def resume(self, partition: int, states: Iterable[FollowState | KillState]) -> int:
        """Start the follows (and standing kills) a previous owner of ``partition`` left; returns how many."""
        ...

    async def stop_partitions(self, partitions: Sequence[int], grace: float) -> None:
        """Revocation: calls on the wire get up to ``grace`` to finish, what is owed is written, then they stop."""
        ...

    async def close(self, grace: float = 0.0) -> None:
        """Shutdown: ``stop_partitions`` for every partition, then release everything else."""
        ...


class FollowReader(Protocol):
    async def read(self, partitions: Iterable[int]) -> Mapping[int, Sequence[FollowState | KillState]]:
        """The live follows of these partitions, as last written."""
        ...
