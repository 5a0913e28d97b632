"""Cancel by selector under failure: a SIGKILL mid-expansion, and a standing kill through a rolling restart.

Separate worker processes, the real broker, the emulator over HTTP, as the other scenarios. Each reports a row
of the reliability table (lost, unfinished, cancel POSTs per batch, re-published events).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.reliability.conftest import RecordRow
from tests.reliability.harness import (
    VariantWorker,
    alive,
    cancel_posts,
    conclude,
    finished,
    wait_committed,
    wait_for,
)
from tests.support.events import EventLog
from tests.support.stack import Stack, StackFactory
from worker.contract import child_command_id, selector_key

pytestmark = pytest.mark.slow

FAST_GROUP = {"BCW_SESSION_TIMEOUT_MS": "6000", "BCW_MAX_POLL_INTERVAL_MS": "10000"}
SLOW_POLLS = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "0.5", "BCW_FOLLOW_MAX_INTERVAL_S": "2"}


async def publish(s: Stack, command: dict[str, Any]) -> str:
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        key = selector_key(command["provider"], command["account"]).encode()
        await producer.send_and_wait(s.commands, json.dumps(command).encode(), key=key)
    finally:
        await producer.stop()
    return str(command["command_id"])


def selector(team: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "cancel_matching",
        "command_id": f"kill-{uuid.uuid4().hex[:10]}",
        "provider": "openai",
        "account": "default",
        "match": {"metadata": {"team": team}},
        "reason": "reliability",
        "requested_by": "tests",
        **fields,
    }


def one_final_each(events: EventLog, ids: list[str]) -> Counter[int]:
    """How many distinct finals (by event id) each command got: every value must be 1."""
    return Counter(len(events.finals(c)) for c in ids)


async def test_s1_sigkill_mid_expansion(make_stack: StackFactory, record_row: RecordRow) -> None:
    """The worker dies (SIGKILL) after publishing 60 of 150 children; its replacement lists again and finishes.
    Every match ends cancelled with exactly one final, the selector with exactly one, and nothing else is hit."""
    started = time.monotonic()
    s = make_stack(partitions=3, **FAST_GROUP, **SLOW_POLLS)
    victim = VariantWorker(
        {**s.env(), "RELIABILITY_CRASH_AT": "child_published", "RELIABILITY_CRASH_AFTER": "60"},
        "tests.reliability.crashing_worker",
        name="s1-victim",
    )
    s.workers.append(victim)
    victim.start()
    team = uuid.uuid4().hex[:8]
    hits = s.emulator.create_batches("openai", 150, prefix=f"sel_s1_{team}_", metadata={"team": team}, cancelling_s=8.0)
    others = s.emulator.create_batches("openai", 50, prefix=f"sel_s1o_{team}_", metadata={"team": "other"})
    command = selector(team, max_batches=200)
    children = [child_command_id(command["command_id"], "openai", "default", b) for b in hits]
    async with EventLog(s.bootstrap, s.events) as events:
        cid = await publish(s, command)
        await wait_for(lambda: victim.proc is not None and victim.proc.poll() is not None, 60, "the crash")
        assert "CRASHING at child_published" in victim.log_text(), victim.log_tail()
        replacement = s.start_worker(name="s1-replacement")
        await wait_for(finished(events, [cid, *children]), 150, "every final event", events)
        posts = cancel_posts(s, "openai", hits + others)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude("s1 SIGKILL mid-expansion (150 matches)", s, events, children, started, committed=committed)
        finals = one_final_each(events, [cid, *children])
        outcomes = Counter(events.finals(c)[0]["outcome"] for c in children)
    row.posts_per_batch = max(posts.values())
    row.notes = f"selector finals {len(events.finals(cid))}; outcomes {dict(outcomes)}"
    record_row(row)
    assert not row.violations(), row.violations()
    assert finals == Counter({1: len(children) + 1}), finals
    assert outcomes == Counter({"cancelled": len(children)}), outcomes
    assert set(posts) == set(hits), "a batch that did not match got a cancel"
    # The one window a SIGKILL opens: a cancel on the wire when the victim died is sent again by the next owner.
    assert max(posts.values()) <= 2, Counter(posts.values())
    assert not alive([replacement]), replacement.log_tail()


async def test_s2_standing_kill_through_a_rolling_restart_then_lifted(
    make_stack: StackFactory, record_row: RecordRow
) -> None:
    """A standing kill moves with its partition through a rolling restart (SIGTERM x2); a batch started after
    the move is cancelled within one sweep interval plus a few seconds; a lift ends the kill with its final."""
    started = time.monotonic()
    interval = 10.0
    s = make_stack(partitions=3, **FAST_GROUP, **SLOW_POLLS)
    old = [s.start_worker(name="s2-old1"), s.start_worker(name="s2-old2")]
    team = uuid.uuid4().hex[:8]
    first = s.emulator.create_batches("openai", 20, prefix=f"sel_s2_{team}_", metadata={"team": team})
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    command = selector(team, until=until, sweep_interval_s=interval)
    kill = command["command_id"]
    async with EventLog(s.bootstrap, s.events) as events:
        await publish(s, command)
        kids = [child_command_id(kill, "openai", "default", b) for b in first]
        await wait_for(finished(events, kids), 90, "the first sweep's children", events)
        for i, leaving in enumerate(old):
            code = await asyncio.to_thread(leaving.terminate, 30.0)
            assert code == 0, leaving.log_tail()
            s.start_worker(name=f"s2-new{i + 1}")
        await wait_committed(s, 60.0)
        born = time.monotonic()
        later = s.emulator.create_batch("openai", f"sel_s2_late_{team}", metadata={"team": team})
        late_kid = child_command_id(kill, "openai", "default", later)
        await wait_for(lambda: bool(cancel_posts(s, "openai", [later])), interval + 20, "the late batch's cancel")
        reach_s = time.monotonic() - born
        await wait_for(finished(events, [late_kid]), 60, "the late child's final", events)
        assert not events.finals(kill), "the kill must still stand"
        lift = {
            "kind": "lift_kill",
            "command_id": f"lift-{uuid.uuid4().hex[:8]}",
            "provider": "openai",
            "account": "default",
            "kill_id": kill,
            "reason": "done",
            "requested_by": "tests",
        }
        await publish(s, lift)
        await wait_for(finished(events, [kill, lift["command_id"]]), 60, "the kill's and the lift's finals", events)
        ids = [*kids, late_kid, kill, lift["command_id"]]
        posts = cancel_posts(s, "openai", [*first, later])
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude(
            "s2 standing kill: rolling restart, late batch, lift", s, events, ids, started, committed=committed
        )
        ended = events.finals(kill)[0]
    row.posts_per_batch = max(posts.values())
    row.notes = f"late batch cancelled {reach_s:.1f}s after it started (interval {interval:.0f}s)"
    record_row(row)
    assert not row.violations(), row.violations()
    assert ended["outcome"] == "ended" and ended["detail"]["code"] == "lifted"
    assert set(posts.values()) == {1} and set(posts) == {*first, later}, posts
    assert reach_s < interval + 10, reach_s
    assert not alive(s.workers[2:]), [w.log_tail() for w in s.workers[2:]]
