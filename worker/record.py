"""What the worker reads of a consumed Kafka record, and how it says a record is done.

aiokafka's ``ConsumerRecord`` fits ``Record``, and ``worker.kafka.offsets.PartitionOffsets`` fits
``CommandOffsets``; so do test fakes. They are protocols so that dispatch and following never import the Kafka plumbing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["CommandOffsets", "Record"]


class Record(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...


class CommandOffsets(Protocol):
    """A partition's offset bookkeeping: ``finished`` marks a record done (its offset may be committed)."""

    @property
    def revoked(self) -> bool:
        """The partition moved to another member: marking is pointless, the next owner decides."""
        ...

    def finished(self, offset: int) -> None: ...
