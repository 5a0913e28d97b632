"""Durable follows (issue 15): scale-up, rolling restart and a SIGKILL in each crash window, on the real
broker with separate worker processes and the provider emulator over HTTP.

Each scenario reports, beside the checker's promises (nothing lost or unfinished, one outcome per command,
offsets committed, no secret anywhere): cancel POSTs per batch, events re-published, and how long after the
last cancel was accepted the group's lag reached 0 while batches were still cancelling.

The crash windows are hit exactly, by a worker that SIGKILLs itself at a named point
(``tests/reliability/crashing_worker.py``); what each window may repeat is derived from what was durable at
the moment of the crash (the follows topic, read back before the replacement starts), not assumed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest

from devstack.worker_process import WorkerProcess
from tests.reliability.conftest import RecordRow
from tests.reliability.harness import (
    VariantWorker,
    accepted,
    alive,
    assignments,
    cancel_posts,
    command,
    conclude,
    finished,
    ids_of,
    publish_commands,
    wait_committed,
    wait_for,
)
from tests.support.events import EventLog, committed_vs_end
from tests.support.stack import Stack, StackFactory
from worker.config import Settings
from worker.contract import FollowState
from worker.kafka.follow_store import read_follows

pytestmark = pytest.mark.slow

#: Short group timers: a crashed member's partitions move in seconds (the broker's minimum session is 6 s).
FAST_GROUP = {"BCW_SESSION_TIMEOUT_MS": "6000", "BCW_MAX_POLL_INTERVAL_MS": "10000"}
#: Batches stay cancelling long enough for every move of a scenario to happen while they do.
SLOW_POLLS = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "0.5", "BCW_FOLLOW_MAX_INTERVAL_S": "2"}


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def lag_zero_after(s: Stack, timeout: float = 30.0) -> float:
    """Seconds until the group has committed every command published so far (intake caught up)."""
    start = time.monotonic()
    while True:
        committed, ends = await committed_vs_end(s.bootstrap, s.commands, s.group)
        if all(committed.get(p, 0) == end for p, end in ends.items()):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"lag not 0 after {timeout:.0f}s: committed {committed}, ends {ends}")
        await asyncio.sleep(0.2)


def restored(worker: WorkerProcess) -> int:
    """Follows the worker resumed from the follows topic, summed over its assignments."""
    return sum(int(record["follows"]) for record in worker.log_events("follows_resumed"))


async def durable(s: Stack) -> dict[str, FollowState]:
    """What the follows topic holds right now, by batch id."""
    found = await read_follows(Settings(kafka_bootstrap_servers=s.bootstrap), s.follows, range(s.partitions))
    return {state.batch_id: state for states in found.values() for state in states if isinstance(state, FollowState)}


async def test_a_scale_up_during_600_long_follows(make_stack: StackFactory, record_row: RecordRow) -> None:
    """A second worker joins (what KEDA does) while one follows 600 cancelling batches: nothing is cancelled
    again, nothing is re-published, and lag is 0 while the batches still cancel."""
    started = time.monotonic()
    s = make_stack(partitions=6, **FAST_GROUP, **SLOW_POLLS)
    first = s.start_worker(name="a-first")
    batches = s.emulator.create_batches("openai", 600, prefix=f"dur_a_{tag()}_", cancelling_s=45.0)
    async with EventLog(s.bootstrap, s.events) as events:
        sent = await publish_commands(s, [command("openai", b) for b in batches])
        ids = ids_of(sent)
        await wait_for(accepted(events, ids), 90, "every cancel accepted", events)
        lag_s = await lag_zero_after(s)
        second = s.start_worker(name="a-second")
        await wait_for(lambda: bool(assignments(second) and assignments(second)[-1]), 60, "the assignment")
        await wait_for(lambda: restored(second) > 0, 60, "the newcomer to resume follows")
        assert not any(events.finals(c) for c in ids), "the join must come while every batch still cancels"
        await wait_for(finished(events, ids), 150, "every final event", events)
        posts = cancel_posts(s, "openai", batches)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude("a scale-up during 600 follows", s, events, ids, started, committed=committed)
    row.posts_per_batch, row.lag_s = max(posts.values()), lag_s
    row.notes = f"{restored(second)} follows resumed by the newcomer"
    record_row(row)
    assert not row.violations(), row.violations()
    assert set(posts) == set(batches) and set(posts.values()) == {1}, Counter(posts.values())
    assert row.republished == 0, row.examples["republished"][:5]
    assert lag_s < 10, lag_s
    assert {events.finals(c)[0]["outcome"] for c in ids} == {"cancelled"}
    assert not alive([first, second]), [w.log_tail() for w in (first, second)]


async def test_b_rolling_restart(make_stack: StackFactory, record_row: RecordRow) -> None:
    """Two workers are replaced one by one with SIGTERM, as a rolling deploy does: each exits in under 5 s
    while batches still cancel, and the follows move without a second cancel or a repeated event."""
    started = time.monotonic()
    s = make_stack(partitions=4, **FAST_GROUP, **SLOW_POLLS)
    old = [s.start_worker(name="b-old1"), s.start_worker(name="b-old2")]
    batches = s.emulator.create_batches("openai", 300, prefix=f"dur_b_{tag()}_", cancelling_s=50.0)
    exits: list[float] = []
    async with EventLog(s.bootstrap, s.events) as events:
        sent = await publish_commands(s, [command("openai", b) for b in batches])
        ids = ids_of(sent)
        await wait_for(accepted(events, ids), 90, "every cancel accepted", events)
        lag_s = await lag_zero_after(s)
        for i, leaving in enumerate(old):
            t0 = time.monotonic()
            code = await asyncio.to_thread(leaving.terminate, 30.0)
            exits.append(time.monotonic() - t0)
            assert code == 0, leaving.log_tail()
            fresh = s.start_worker(name=f"b-new{i + 1}")
            await wait_for(lambda w=fresh: restored(w) > 0, 60, "the new pod to resume follows")  # type: ignore[misc]
        assert not any(events.finals(c) for c in ids), "the restarts must come while every batch still cancels"
        await wait_for(finished(events, ids), 150, "every final event", events)
        posts = cancel_posts(s, "openai", batches)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude("b rolling restart (SIGTERM x2)", s, events, ids, started, committed=committed)
    row.posts_per_batch, row.lag_s = max(posts.values()), lag_s
    row.notes = "exits " + ", ".join(f"{t:.1f}s" for t in exits)
    record_row(row)
    assert not row.violations(), row.violations()
    assert all(t < 5 for t in exits), exits
    assert set(posts.values()) == {1}, Counter(posts.values())
    assert row.republished == 0, row.examples["republished"][:5]
    assert lag_s < 10, lag_s
    assert not alive(s.workers[2:]), [w.log_tail() for w in s.workers[2:]]


#: window -> the occurrence of its point at which the worker dies (40 batches, each reaching each point).
WINDOWS = {
    "cancel_accepted": 25,  # the provider took the cancel; no state says so yet
    "state_written": 30,  # a state is durable; the offsets it released are not committed yet
    "event_published": 30,  # a state event is out; the state saying it was told is not
    "final_published": 5,  # a final event is out; the state without its command (or the tombstone) is not
}


@pytest.mark.parametrize("window", list(WINDOWS))
async def test_c_sigkill_in_each_crash_window(make_stack: StackFactory, record_row: RecordRow, window: str) -> None:
    started = time.monotonic()
    s = make_stack(partitions=3, **FAST_GROUP, **SLOW_POLLS)
    victim = VariantWorker(
        {**s.env(), "RELIABILITY_CRASH_AT": window, "RELIABILITY_CRASH_AFTER": str(WINDOWS[window])},
        "tests.reliability.crashing_worker",
        name=f"c-{window}",
    )
    s.workers.append(victim)
    victim.start()
    batches = s.emulator.create_batches("openai", 40, prefix=f"dur_c_{tag()}_", cancelling_s=6.0)
    async with EventLog(s.bootstrap, s.events) as events:
        sent = await publish_commands(s, [command("openai", b) for b in batches])
        ids = ids_of(sent)
        await wait_for(lambda: victim.proc is not None and victim.proc.poll() is not None, 60, "the crash")
        assert f"CRASHING at {window}" in victim.log_text(), victim.log_tail()
        at_crash = await durable(s)
        posts_before = cancel_posts(s, "openai", batches)
        replacement = s.start_worker(name=f"c-{window}-replacement")
        await wait_for(finished(events, ids), 120, "every final event", events)
        posts = cancel_posts(s, "openai", batches)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude(f"c SIGKILL at {window}", s, events, ids, started, committed=committed)
    row.posts_per_batch = max(posts.values())
    record_row(row)
    assert not row.violations(), row.violations()
    # A cancel recorded as accepted is never sent again; any other at most once more (the window's own).
    again = [b for b, st in at_crash.items() if st.cancel_accepted and posts[b] > posts_before.get(b, 0)]
    assert not again, f"cancelled again although the state said accepted: {again[:5]}"
    assert max(posts.values()) <= 2, Counter(posts.values())
    # An event may be re-published only if the durable state did not record that its command was told it.
    told = {w.command_id: w.last_status for st in at_crash.values() for w in st.waiting}
    by_id = {p.value["event_id"]: p.value for c in ids for p in events.by_command.get(c, [])}
    unexpected = []
    for entry in row.examples["republished"]:
        cid, eid = entry.split(":", 1)
        event = by_id[eid]
        if cid in told and not event["final"] and event["status"] == told[cid]:
            unexpected.append(entry)
    assert not unexpected, f"re-published although recorded as told: {unexpected[:5]}"
    row.notes = f"{len(at_crash)} follows durable at the crash; {row.republished} events repeated"
    assert not alive([replacement]), replacement.log_tail()
