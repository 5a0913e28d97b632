"""The watermark rule, directly: nothing above an unfinished record is ever committable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.kafka.offsets import PartitionOffsets


def test_finished_above_a_running_record_waits_for_it() -> None:
    p = PartitionOffsets()
    for o in (10, 11, 12):
        p.started(o)
    p.finished(12)
    p.finished(11)
    assert p.to_commit() is None
    assert p.in_flight == 3
    p.finished(10)
    assert p.to_commit() == 13
    assert p.in_flight == 0


def test_gaps_in_offsets_do_not_block_the_watermark() -> None:
    p = PartitionOffsets()
    p.started(5)
    p.started(9)  # 6..8 were compacted away or are transaction markers
    p.finished(5)
    assert p.to_commit() == 6
    p.finished(9)
    assert p.to_commit() == 10


def test_commit_is_reported_once() -> None:
    p = PartitionOffsets()
    p.started(0)
    p.finished(0)
    assert p.to_commit() == 1
    p.committed(1)
    assert p.to_commit() is None
    p.started(1)
    p.finished(1)
    assert p.to_commit() == 2


def test_out_of_order_start_is_a_bug_not_a_silent_skip() -> None:
    p = PartitionOffsets()
    p.started(3)
    with pytest.raises(ValueError, match="in order"):
        p.started(3)


@given(st.permutations(list(range(40))), st.integers(0, 39))
def test_watermark_is_the_first_unfinished_offset(order: list[int], stop: int) -> None:
    p = PartitionOffsets()
    for o in range(40):
        p.started(o)
    finished = set(order[:stop])
    for o in order[:stop]:
        p.finished(o)
    first_unfinished = min(set(range(40)) - finished)
    expected = first_unfinished if first_unfinished > 0 else None
    assert p.to_commit() == expected
    assert p.in_flight == 40 - first_unfinished


def test_lag_counts_fetched_but_uncommitted_records() -> None:
    p = PartitionOffsets()
    assert p.lag == 0
    for o in (100, 101, 102):
        p.started(o)
    assert p.lag == 3
    p.finished(100)
    p.committed(101)
    assert p.lag == 2
