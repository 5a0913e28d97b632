"""Push under failure: the receiver killed while the provider's deliveries are retried, and signals for follows
that move between workers. Separate processes (workers, receivers, the emulator) and the real broker; each
reports a row of the reliability table.

Both use a private emulator: its pushes go to this test's receiver only. The push account polls every 30 s as
a safety net, so a follow that ends in seconds was ended by a signal; the GETs per batch say so too.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from batch_cancel_emulator.testing import Emulator, PushRetry
from devstack.broker import KafkaBroker, free_port
from tests.reliability.conftest import RecordRow
from tests.reliability.harness import (
    accepted,
    alive,
    cancel_posts,
    command,
    conclude,
    finished,
    ids_of,
    publish_commands,
    wait_committed,
    wait_for,
)
from tests.support.events import EventLog
from tests.support.stack import Stack
from tests.webhooks.signed import WHSEC

pytestmark = pytest.mark.slow

FAST_GROUP = {"BCW_SESSION_TIMEOUT_MS": "6000", "BCW_MAX_POLL_INTERVAL_MS": "10000"}
POLLS = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "0.5", "BCW_FOLLOW_MAX_INTERVAL_S": "2"}
SAFETY_S = 30.0  # the push account's poll_interval_s in tests/support/stack.py
RETRY = PushRetry(initial_s=0.5, factor=1.5, max_interval_s=2.0, max_attempts=200)


@pytest.fixture
def push_stack(kafka: KafkaBroker, tmp_path: Path) -> Iterator[Stack]:
    with Emulator() as emu:
        s = Stack(kafka, emu, tmp_path, partitions=4, push={"openai": WHSEC}, env_overrides={**FAST_GROUP, **POLLS})
        try:
            yield s
        finally:
            s.close()


def gets(s: Stack, batches: list[str]) -> Counter[str]:
    wanted = set(batches)
    requests = s.emulator.requests(dialect="openai")
    return Counter(r["batch_id"] for r in requests if r["method"] == "GET" and r["batch_id"] in wanted)


def ended_to_final(s: Stack, events: EventLog, ids: list[str], batches: list[str]) -> list[float]:
    """Per batch: from the emulator's moment the batch ended to the final event's ``observed_at``."""
    ended = {d["batch_id"]: d["changed_wall"] for d in s.emulator.deliveries(dialect="openai")}
    return [
        datetime.fromisoformat(events.finals(c)[0]["observed_at"]).timestamp() - ended[b]
        for c, b in zip(ids, batches, strict=True)
    ]


async def test_p1_receiver_killed_while_deliveries_are_retried(push_stack: Stack, record_row: RecordRow) -> None:
    """200 batches end while the receiver is down (SIGKILL): the emulator's deliveries fail and are retried
    like a provider's; a receiver restarted on the same address takes them and every follow ends by its signal."""
    started = time.monotonic()
    s = push_stack
    s.start_worker(name="p1-worker")
    port = free_port()
    receiver, url = s.start_receiver("p1-receiver", port=port)
    s.emulator.push_to("openai", f"{url}/webhooks/openai/default", secret=WHSEC, retry=RETRY)
    batches = s.emulator.create_batches("openai", 200, prefix=f"push_p1_{uuid.uuid4().hex[:6]}_", cancelling_s=4.0)
    async with EventLog(s.bootstrap, s.events) as events:
        ids = ids_of(await publish_commands(s, [command("openai", b) for b in batches]))
        await wait_for(accepted(events, ids), 60, "every cancel accepted", events)
        receiver.kill()
        killed = time.monotonic()

        def failed() -> set[str]:
            return {d["batch_id"] for d in s.emulator.deliveries(dialect="openai") if d["status"] is None}

        await wait_for(lambda: len(failed()) == len(batches), 60, "every delivery refused by the dead receiver")
        down_s = time.monotonic() - killed
        s.start_receiver("p1-receiver-again", port=port)
        await wait_for(finished(events, ids), SAFETY_S - 5, "every final, before any safety poll", events)
        attempts = Counter(d["batch_id"] for d in s.emulator.deliveries(dialect="openai"))
        per_batch_gets = gets(s, batches)
        posts = cancel_posts(s, "openai", batches)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude("p1 receiver killed while deliveries retry (200)", s, events, ids, started, committed=committed)
        outcomes = Counter(events.finals(c)[0]["outcome"] for c in ids)
    row.posts_per_batch = max(posts.values())
    row.notes = (
        f"{sum(attempts.values())} delivery attempts for {len(batches)} events (max {max(attempts.values())} per "
        f"event), receiver down ~{down_s:.0f}s; GETs per batch max {max(per_batch_gets.values())}"
    )
    record_row(row)
    assert not row.violations(), row.violations()
    assert outcomes == Counter({"cancelled": len(batches)}), outcomes
    assert set(posts.values()) == {1}
    # The cancel's confirmation and the signal's poll: no routine poll ended these follows.
    assert max(per_batch_gets.values()) <= 2, Counter(per_batch_gets.values())
    assert not alive(s.workers[:1]), s.workers[0].log_tail()


async def test_p2_signals_for_follows_moving_between_workers(push_stack: Stack, record_row: RecordRow) -> None:
    """300 batches end while their follows move: a second worker joins (the first hands over half of the
    partitions), then the first leaves (SIGTERM, the rest move). Every follow ends; how long after its batch
    ended is measured, and bounded by the safety interval at worst."""
    started = time.monotonic()
    s = push_stack
    first = s.start_worker(name="p2-first")
    _, url = s.start_receiver("p2-receiver")
    s.emulator.push_to("openai", f"{url}/webhooks/openai/default", secret=WHSEC, retry=RETRY)
    async with EventLog(s.bootstrap, s.events) as events:
        # Three waves ending 2 s apart, so that some batches end before, during and after each move.
        batches: list[str] = []
        for wave, ends_in in enumerate((4.0, 6.0, 8.0)):
            batches += s.emulator.create_batches(
                "openai", 100, prefix=f"push_p2_{wave}_{uuid.uuid4().hex[:6]}_", cancelling_s=ends_in
            )
        ids = ids_of(await publish_commands(s, [command("openai", b) for b in batches]))
        await wait_for(accepted(events, ids), 60, "every cancel accepted", events)
        s.start_worker(name="p2-second")
        assert await asyncio.to_thread(first.terminate, 30.0) == 0, first.log_tail()
        await wait_for(finished(events, ids), SAFETY_S + 20, "every final", events)
        took = ended_to_final(s, events, ids, batches)
        per_batch_gets = gets(s, batches)
        posts = cancel_posts(s, "openai", batches)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude("p2 signals while follows move (300)", s, events, ids, started, committed=committed)
        outcomes = Counter(events.finals(c)[0]["outcome"] for c in ids)
    p99 = statistics.quantiles(took, n=100)[98]
    row.posts_per_batch = max(posts.values())
    row.notes = (
        f"batch ended -> final p50 {statistics.median(took):.2f}s p99 {p99:.2f}s max {max(took):.2f}s "
        f"(safety {SAFETY_S:.0f}s); GETs per batch {dict(sorted(Counter(per_batch_gets.values()).items()))}"
    )
    record_row(row)
    assert not row.violations(), row.violations()
    assert outcomes == Counter({"cancelled": len(batches)}), outcomes
    assert set(posts.values()) == {1}, Counter(posts.values())
    assert max(took) < SAFETY_S + 5, sorted(took)[-5:]
    assert not alive(s.workers[1:2]), s.workers[1].log_tail()
