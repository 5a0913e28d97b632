"""Kill switch by selector: ``n`` matching batches among ``n + others`` on one account with a request budget.

One worker process, one emulator, one selector command over the team's metadata. Measured: the time from
publishing the selector to the last cancel POST against what the budget allows at best (``n / budget``
seconds), list requests as a share of all requests while the expansion runs, the worker's peak RSS, and how
fast plain cancels published during the expansion reach the provider (they must overtake the children).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from batch_cancel_emulator.testing import Emulator
from bench.scenarios import Context, _probe, percentiles
from bench.stack import PROVIDER, Observer, Topics, WorkerProc, peak_rss_mb
from worker.contract import child_command_id, selector_key

__all__ = ["kill_switch"]


def _posts(emulator: Emulator, wanted: set[str]) -> list[float]:
    return sorted(
        float(r["t_wall"])
        for r in emulator.requests(dialect=PROVIDER)
        if r["method"] == "POST" and r.get("batch_id") in wanted
    )


async def kill_switch(ctx: Context, n: int, others: int, budget: float) -> dict[str, Any]:
    env = {
        "BCW_FOLLOW_INITIAL_INTERVAL_S": "1",
        "BCW_FOLLOW_MAX_INTERVAL_S": "30",
        "BCW_MAX_IN_FLIGHT": str(4 * n),
    }
    with Emulator() as emulator:
        topics = Topics(ctx.broker, 6)
        worker = WorkerProc(topics, emulator, ctx.log_dir, name="kill", budget=str(budget), **env)
        await asyncio.to_thread(worker.wait_ready)
        observer = Observer(topics.bootstrap, topics.events)
        team = uuid.uuid4().hex[:8]
        hits = emulator.create_batches(PROVIDER, n, prefix=f"kill_{team}_", metadata={"team": team}, cancelling_polls=1)
        emulator.create_batches(PROVIDER, others, prefix=f"keep_{team}_", metadata={"team": "other"})
        kill_id = f"bench-kill-{team}"
        command = {
            "kind": "cancel_matching",
            "command_id": kill_id,
            "provider": PROVIDER,
            "account": "default",
            "match": {"metadata": {"team": team}},
            "reason": "bench",
            "requested_by": "bench",
            "max_batches": n,
        }
        producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap, acks="all")
        try:
            await observer.start()
            await producer.start()
            t0 = time.time()
            await producer.send_and_wait(
                topics.commands, json.dumps(command).encode(), key=selector_key(PROVIDER, "default").encode()
            )
            await asyncio.sleep(min(5.0, n / budget / 4))  # the expansion is well under way
            probe = await _probe(emulator, topics, 5.0, 50, "kill")
            # Wait on the children's final events (headers only), not on the request log: fetching a log of
            # tens of thousands of entries every few seconds would load the emulator the run measures.
            children = {child_command_id(kill_id, PROVIDER, "default", b) for b in hits}
            await observer.wait_finals(children, n / budget * 3 + 180)
            posts = _posts(emulator, set(hits))
            last = posts[-1] if posts else float("nan")
            log = [r for r in emulator.requests(dialect=PROVIDER) if float(r["t_wall"]) <= last]
            lists = sum(1 for r in log if r.get("op") == "list")
            peak = peak_rss_mb(worker.pid)
            seconds = last - t0
            return {
                "matching": n,
                "listed": n + others,
                "budget_rps": budget,
                "cancel_posts": len(posts),
                "seconds_to_last_post": seconds,
                "floor_seconds": n / budget,
                "cancels_per_s": len(posts) / seconds if seconds > 0 else 0.0,
                "ratio_to_budget": len(posts) / seconds / budget if seconds > 0 else 0.0,
                "list_requests": lists,
                "requests_during_expansion": len(log),
                "list_share": lists / max(1, len(log)),
                "worker_peak_rss_mb": peak,
                "plain_cancel_ms": percentiles(probe),
            }
        finally:
            await producer.stop()
            await observer.stop()
            worker.stop(timeout=60)
