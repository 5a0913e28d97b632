"""Scenarios 1 to 5 and 7 of issue 10: real broker, real worker processes, the provider emulator over HTTP.

Each scenario uses its own topics, group and command ids, waits on conditions with deadlines (never a
bare sleep) and ends with one ``checker.Row``: nothing lost, no second outcome after de-duplication by
``event_id``, committed offsets at the log end, no API key anywhere, and no worker that died on its own.
Scenario 6 (poison input) lives in ``test_poison.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest

from batch_cancel_emulator.testing import key_id
from devstack.broker import KafkaBroker
from tests.reliability.conftest import PrivateStack, RecordRow
from tests.reliability.harness import (
    VariantWorker,
    accepted,
    alive,
    assignments,
    cancel_posts,
    command,
    conclude,
    deliveries,
    finished,
    ids_of,
    publish_commands,
    revocations,
    wait_committed,
    wait_for,
)
from tests.support.events import EventLog, committed_vs_end
from tests.support.stack import StackFactory

pytestmark = pytest.mark.slow

#: Short group timers so evictions and takeovers happen in seconds (the broker's minimum session is 6 s).
FAST_GROUP = {"BCW_SESSION_TIMEOUT_MS": "6000", "BCW_MAX_POLL_INTERVAL_MS": "5000"}


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def test_1_crash_mid_follow(make_stack: StackFactory, record_row: RecordRow) -> None:
    """SIGKILL a worker while every batch is still cancelling; a new worker finishes everything once."""
    started = time.monotonic()
    s = make_stack(partitions=3, BCW_FOLLOW_MAX_INTERVAL_S="1", **FAST_GROUP)
    victim = s.start_worker(name="s1-victim")
    batches = s.emulator.create_batches("dashscope", 150, prefix=f"rel1_{tag()}_", cancelling_s=8.0)
    async with EventLog(s.bootstrap, s.events) as events:
        sent = await publish_commands(s, [command("dashscope", b) for b in batches])
        ids = ids_of(sent)
        await wait_for(accepted(events, ids), 60, "every cancel accepted", events)
        assert not any(events.finals(c) for c in ids), "batches must still be cancelling when the worker dies"
        victim.kill()
        replacement = s.start_worker(name="s1-replacement")
        await wait_for(finished(events, ids), 120, "every final event", events)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude("1 crash mid-follow (SIGKILL)", s, events, ids, started, committed=committed)
    record_row(row)
    assert not row.violations(), row.violations()
    assert {events.finals(c)[0]["outcome"] for c in ids if c} == {"cancelled"}
    # One cancel per delivery: the victim's, then the replacement's (more only if a partition moved again).
    posts = cancel_posts(s, "dashscope", batches)
    per_partition = deliveries(s.workers)
    partition_of = {events.by_command[x.command_id][0].value["batch_id"]: x.partition for x in sent if x.command_id}
    over = {b: (n, per_partition[partition_of[b]]) for b, n in posts.items() if n > per_partition[partition_of[b]]}
    assert set(posts) == set(batches) and not over, f"cancel re-issued more often than delivered: {over}"
    assert not alive([replacement]), replacement.log_tail()


async def test_2_graceful_scale_down(make_stack: StackFactory, record_row: RecordRow) -> None:
    """SIGTERM one of two workers mid-stream: it drains and commits; the survivor does the rest, once."""
    started = time.monotonic()
    s = make_stack(partitions=4, BCW_SHUTDOWN_GRACE_S="15", **FAST_GROUP)
    leaver = s.start_worker(name="s2-leaver")
    survivor = s.start_worker(name="s2-survivor")
    batches = s.emulator.create_batches("openai", 300, prefix=f"rel2_{tag()}_", cancelling_s=4.0)
    async with EventLog(s.bootstrap, s.events) as events:
        first = await publish_commands(s, [command("openai", b) for b in batches[:200]])
        ids = ids_of(first)
        await wait_for(accepted(events, ids), 60, "every cancel accepted", events)
        assert sum(1 for c in ids if events.finals(c)) < len(ids), "the stop must come mid-stream"
        owned = assignments(leaver)[-1]
        assert owned, "the leaver must own partitions when it is stopped"
        t0 = time.monotonic()
        code = await asyncio.to_thread(leaver.terminate, 60.0)
        took = time.monotonic() - t0
        assert code == 0, leaver.log_tail()
        assert took < 15 + 10, f"exit took {took:.1f}s, grace is 15s"
        # Everything the leaver fetched was finished within the grace period and committed before it left.
        committed, ends = await committed_vs_end(s.bootstrap, s.commands, s.group)
        assert all(committed.get(p) == ends[p] for p in owned), (owned, committed, ends)
        second = await publish_commands(s, [command("openai", b) for b in batches[200:]])
        ids += ids_of(second)
        await wait_for(finished(events, ids), 120, "every final event", events)
        settled = await wait_committed(s, 60.0, fail=False)
        row = conclude(
            "2 graceful scale-down (SIGTERM)",
            s,
            events,
            ids,
            started,
            committed=settled,
            notes=f"exit 0 in {took:.1f}s",
        )
    record_row(row)
    assert not row.violations(), row.violations()
    # The leaver's partitions were handed over at their log end: nothing it finished was done twice.
    theirs = {x.command_id for x in first if x.partition in owned}
    assert not theirs & set(row.examples["redelivered"]), "the survivor redid work the leaver had committed"
    assert not alive([survivor]), survivor.log_tail()


async def test_3_rebalance_during_long_follows(make_stack: StackFactory, record_row: RecordRow) -> None:
    """Two more workers join while the first follows hundreds of batches (paused by back-pressure); the poll
    loop never blocks, so nobody is evicted for max_poll_interval_ms."""
    started = time.monotonic()
    # max_in_flight 120 < 300: intake stays paused for most of the run, and a paused consumer must still poll.
    s = make_stack(partitions=6, BCW_FOLLOW_MAX_INTERVAL_S="2", BCW_MAX_IN_FLIGHT="120", **FAST_GROUP)
    s.start_worker(name="s3-first")
    batches = s.emulator.create_batches("openai", 300, prefix=f"rel3_{tag()}_", cancelling_s=20.0)
    async with EventLog(s.bootstrap, s.events) as events:
        sent = await publish_commands(s, [command("openai", b) for b in batches])
        ids = ids_of(sent)
        await wait_for(accepted(events, ids), 60, "every cancel accepted", events)
        s.start_worker(name="s3-second")
        s.start_worker(name="s3-third")
        # Followed for longer than max_poll_interval_ms (5 s) several times over.
        await wait_for(finished(events, ids), 150, "every final event", events)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude("3 rebalance during long follows", s, events, ids, started, committed=committed)
    record_row(row)
    assert not row.violations(), row.violations()
    assert not alive(s.workers), [w.log_tail() for w in s.workers]
    # Eager rebalances: each join revokes every current member once; an eviction would add more.
    expected = {"s3-first": 2, "s3-second": 1, "s3-third": 0}
    seen = {name: revocations(w) for name, w in zip(expected, s.workers, strict=True)}
    assert seen == expected, f"unexpected rebalances (an evicted member rejoins): {seen}"
    for w in s.workers:
        text = w.log_text()
        assert text.count("CommitFailedError") <= 2, f"CommitFailedError loop:\n{w.log_tail()}"
        assert "LeaveGroup" not in text and "session expired" not in text, w.log_tail()


async def test_4_broker_restart(private_stack: PrivateStack, record_row: RecordRow) -> None:
    """A private broker is stopped cleanly, then killed, mid-stream; the same worker process carries on."""
    started = time.monotonic()
    s = private_stack(3, own_broker=True, BCW_FOLLOW_MAX_INTERVAL_S="1")
    w = s.start_worker(name="s4-worker")
    pid = w.proc.pid if w.proc else None
    ids: list[str] = []
    recovery: list[float] = []
    async with EventLog(s.bootstrap, s.events) as events:
        for wave, hard in (("clean", False), ("hard", True), ("after", None)):
            batches = s.emulator.create_batches("openai", 60, prefix=f"rel4{wave}_{tag()}_", cancelling_s=3.0)
            sent = await publish_commands(s, [command("openai", b) for b in batches])
            wave_ids = ids_of(sent)
            ids += wave_ids
            await wait_for(accepted(events, wave_ids), 60, "cancels accepted", events)
            if hard is None:
                break
            # Down while every batch of this wave is mid-follow: finals can only be published after the restart.
            assert isinstance(s.kafka, KafkaBroker)
            await asyncio.to_thread(s.kafka.restart, hard=hard)
            recovery.append(await wait_for(finished(events, ids), 120, f"finals after {wave} restart", events))
        await wait_for(finished(events, ids), 120, "every final event", events)
        before = {p.value["event_id"] for p in events.records}
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude(
            "4 broker restart (clean, SIGKILL)",
            s,
            events,
            ids,
            started,
            committed=committed,
            notes="finals " + ", ".join(f"{t:.1f}s" for t in recovery) + " after broker back",
        )
    record_row(row)
    assert not row.violations(), row.violations()
    assert w.proc is not None and w.proc.pid == pid and w.proc.poll() is None, "the worker was restarted"
    assert w.get("/readyz")[0] == 200, w.log_tail()
    # Everything published before and after the restarts is readable from the beginning, by a fresh reader.
    async with EventLog(s.bootstrap, s.events) as reread:
        await wait_for(lambda: before <= {p.value["event_id"] for p in reread.records}, 60, "re-read", reread)


async def test_5_provider_outage(private_stack: PrivateStack, record_row: RecordRow) -> None:
    """503/50505 for several backoff cycles, then recovery: every command ends, bounds are respected."""
    started = time.monotonic()
    s = private_stack(3)
    short_key = f"sk-short-{tag()}"
    s.emulator.add_key("siliconflow", short_key)
    base = s.emulator.base_url("siliconflow")
    s.providers_file.write_text(
        "providers:\n"
        "  siliconflow:\n"
        "    dialect: siliconflow\n"
        f"    base_url: {base}\n"
        "    max_concurrency: 4\n"
        "    max_requests_per_s: 5000\n"
        "    retry_budget_s: 120\n"
        "    accounts: { default: { api_key_env: E2E_KEY } }\n"
        "  sfshort:\n"
        "    dialect: siliconflow\n"
        f"    base_url: {base}\n"
        "    max_concurrency: 2\n"
        "    max_requests_per_s: 5000\n"
        "    retry_budget_s: 4\n"
        "    accounts: { default: { api_key_env: E2E_SHORT_KEY } }\n"
    )
    s.start_worker(name="s5-worker", E2E_SHORT_KEY=short_key)
    overloads = 6
    outage = [{"kind": "overload", "count": overloads}]
    recovering = s.emulator.create_batches("siliconflow", 80, prefix=f"rel5_{tag()}_", faults=outage, delay_s=0.05)
    endless = [{"kind": "overload", "count": 100_000}]
    down = s.emulator.create_batches("siliconflow", 6, prefix=f"rel5down_{tag()}_", faults=endless, delay_s=0.05)
    async with EventLog(s.bootstrap, s.events) as events:
        sent = await publish_commands(
            s, [command("siliconflow", b) for b in recovering] + [command("sfshort", b) for b in down]
        )
        ids = ids_of(sent)
        await wait_for(finished(events, ids), 150, "every final event", events)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude("5 provider outage (503/50505)", s, events, ids, started, committed=committed)
    record_row(row)
    assert not row.violations(), row.violations()
    outcomes = Counter(events.finals(c)[0]["outcome"] for c in ids)
    assert outcomes == {"cancelled": len(recovering), "gave_up": len(down)}, outcomes
    log = s.emulator.requests(dialect="siliconflow")
    for b in recovering:  # retried through the whole outage, never once more after the success
        statuses = [r["status"] for r in log if r["batch_id"] == b and r["method"] == "POST"]
        assert statuses == [503] * overloads + [200], (b, statuses)
    for b in down:  # the budget bounds the whole logical call, waits included
        posts = [r for r in log if r["batch_id"] == b and r["method"] == "POST"]
        span = posts[-1]["t_mono"] - posts[0]["t_mono"]
        assert len(posts) >= 2 and span <= 4 + 1.0, (b, len(posts), span)
    peak = s.emulator.stats()["max_in_flight"]
    assert peak[f"key:siliconflow:{key_id('sk-emulator')}"] <= 4, peak
    assert peak[f"key:siliconflow:{key_id(short_key)}"] <= 2, peak
    assert peak[f"key:siliconflow:{key_id('sk-emulator')}"] == 4, f"the bound was never reached: {peak}"
    assert not alive(s.workers), s.workers[0].log_tail()


async def test_7_negative_control_blocked_loop(make_stack: StackFactory, record_row: RecordRow) -> None:
    """Block a worker's event loop past max_poll_interval/session timeout: the checker must see redelivery."""
    started = time.monotonic()
    s = make_stack(partitions=2, **FAST_GROUP)
    blocker = VariantWorker(
        {**s.env(), "BCW_COMMIT_INTERVAL_S": "3", "RELIABILITY_BLOCK_S": "15"},
        "tests.reliability.blocking_worker",
        name="s7-blocker",
    )
    s.workers.append(blocker)
    blocker.start()
    s.start_worker(name="s7-healthy")
    await wait_for(lambda: all(assignments(w) and assignments(w)[-1] for w in s.workers), 60, "one partition each")
    batches = s.emulator.create_batches("openai", 80, prefix=f"rel7_{tag()}_", cancelling_polls=1)
    async with EventLog(s.bootstrap, s.events) as events:
        sent = await publish_commands(s, [command("openai", b) for b in batches])
        ids = ids_of(sent)
        await wait_for(finished(events, ids), 120, "every final event", events)
        await wait_for(lambda: "UNBLOCKED" in blocker.log_text(), 60, "the blocked worker to wake up")
        committed = await wait_committed(s, 60.0, fail=False)
        await events.poll()
        row = conclude(
            "7 negative control: blocked loop", s, events, ids, started, committed=committed, notes="must redeliver"
        )
    record_row(row)
    assert "BLOCKING" in blocker.log_text(), blocker.log_tail()
    # The promise still holds (at least once, one outcome after de-dup, nothing lost) ...
    assert not row.violations(), row.violations()
    # ... and the checker sees what the block caused. With durable follows the evicted member's follows move
    # through the follow-state topic, so what repeats is what it had published but not yet recorded: events
    # told twice (same event_id). Strict mode must fail on them.
    assert row.republished > 0 and row.violations(allow_redelivery=False), row
    posts = cancel_posts(s, "openai", batches)
    row.notes = (
        f"detected: {row.republished} events republished ({row.redelivered} finals), "
        f"{sum(n > 1 for n in posts.values())} cancels re-sent"
    )
