"""Which offsets may be committed: the watermark below which every command is done with (its intent durable
on the follow-state topic, or its outcome published).

Commands of one partition finish out of order (a quick rejection overtakes a batch that stays
``cancelling`` for ten minutes), but Kafka stores one committed offset per partition. Committing a
finished command above a running one would lose the running one on a crash, so the committable offset
only moves past a contiguous prefix of finished records; finished records above a gap wait for it.

Pure bookkeeping, no I/O: the consumer feeds it, a commit loop reads it, and it is tested directly.
A fresh ``PartitionOffsets`` is made on every assignment, and work started under an earlier assignment
holds the old object, so late completions from revoked work can never move a new owner's watermark.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PartitionOffsets"]


class PartitionOffsets:
    """Offsets of one partition for one assignment: started in fetch order, finished in any order."""

    __slots__ = ("_committed", "_done", "_first", "_order", "_watermark", "fetched", "revoked")

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        self._watermark: int | None = None  # next offset to consume once everything below is finished
        self._committed: int | None = None
        self.fetched: int | None = None  # next offset after the last record started
        self._first = 0  # first offset started under this assignment
        self.revoked = False

    def started(self, offset: int) -> None:
        """Record fetched; offsets arrive in increasing order per partition (gaps allowed: compaction, markers)."""
        if self._order and offset <= self._order[-1]:
            raise ValueError(f"offset {offset} started after {self._order[-1]}: records must arrive in order")
        if self.fetched is None:
            self._first = offset
        self._order.append(offset)
        self.fetched = offset + 1

    def finished(self, offset: int) -> None:
        """The record is done with (its intent is durable or its outcome published): it may be committed once
        every earlier record is too."""
        self._done.add(offset)
        while self._order and self._order[0] in self._done:
            head = self._order.popleft()
            self._done.discard(head)
            self._watermark = head + 1

    @property
    def in_flight(self) -> int:
        """Records started and not yet committable (finished ones waiting above a gap included)."""
        return len(self._order)

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when the broker already has it."""
        if self._watermark is None or self._watermark == self._committed:
            return None
        return self._watermark

    @property
    def lag(self) -> int:
        """Records fetched and not yet committed: what a crash right now would make another worker redo."""
        if self.fetched is None:
            return 0
        return self.fetched - (self._committed if self._committed is not None else self._first)

    def committed(self, offset: int) -> None:
        """The broker accepted ``offset`` for this partition."""
        if self._committed is None or offset > self._committed:
            self._committed = offset
