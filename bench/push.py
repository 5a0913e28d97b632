"""Push against polling (issue 28): the same ``n`` OpenAI follows, once at an account that pushes, once at one
that does not, each with a fresh worker process, emulator and topics.

Every batch takes ``cancelling_s`` to cancel after its cancel is accepted (the emulator ends it on time, polled
or not). The account has a request budget, so the cancels go out at about ``budget`` per second and the
emulator's own deliveries stay close behind the batches' ends. In the push run the emulator delivers a signed
``batch.cancelled`` webhook to the receiver (``batch-cancel-worker webhooks``, its own process) the moment a
batch ends; the follows wait ``poll_interval_s`` (300 s, longer than the cancel) after their confirming poll.
In the plain run the follows poll as the worker does by default, 1 s backing off to 30 s.

Measured for each run: GETs per follow (the emulator's request log), batch terminal → final event (terminal:
the emulator's ``changed_wall`` of the delivery in the push run, the cancel POST's time + ``cancelling_s`` in
the plain run; final: when a consumer of the events topic read it, and the record's CreateTime), the
worker's CPU per follow and, in the push run, the receiver's CPU per delivery, the deliveries' own lag, and the
worker's and receiver's push counters (signals polled or not held, polls saved, deliveries by result).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import secrets
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from batch_cancel_emulator.testing import Emulator, PushRetry
from bench.scenarios import Context, percentiles
from bench.stack import Observer, Topics, WorkerProc, load_average, publish_bulk
from devstack.broker import free_port

__all__ = ["push_against_polling"]

PROVIDER: Final = "openai"  # bench.stack.PROVIDER, as the literal the emulator's push_to takes

#: The worker's defaults for a plain follow (BCW_FOLLOW_INITIAL_INTERVAL_S / BCW_FOLLOW_MAX_INTERVAL_S).
PLAIN_FOLLOW = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "1", "BCW_FOLLOW_MAX_INTERVAL_S": "30"}
#: A provider's retries, faster than OpenAI's (minutes) so that a refused delivery shows within the run.
RETRY = PushRetry(initial_s=0.5, factor=2.0, max_interval_s=10.0, max_attempts=20)
#: Push metrics read from the worker's and the receiver's ``/metrics`` at the end of a run.
COUNTERS = ("bcw_signals", "bcw_push_polls_saved", "bcw_webhook_deliveries")
HISTOGRAMS = ("bcw_signal_poll_seconds", "bcw_webhook_seconds")


async def push_against_polling(
    ctx: Context, n: int, cancelling_s: float, budget: float, poll_interval_s: float = 300.0
) -> dict[str, Any]:
    """Both runs, push first, and the ratios the issue's targets are about."""
    pushed = await _run(ctx, n, cancelling_s, budget, poll_interval_s)
    polled = await _run(ctx, n, cancelling_s, budget, None)
    p99_push = pushed["terminal_to_final_seen_ms"]["p99"]
    return {
        "follows": n,
        "cancelling_s": cancelling_s,
        "budget_rps": budget,
        "poll_interval_s": poll_interval_s,
        "push": pushed,
        "poll": polled,
        "gets_ratio": polled["gets_per_follow"] / pushed["gets_per_follow"] if pushed["gets_per_follow"] else 0.0,
        "target_gets_ratio_met": polled["gets_per_follow"] >= 5 * pushed["gets_per_follow"],
        "target_p99_met": p99_push < 1000,
    }


def _whsec() -> str:
    """A fresh OpenAI-style signing secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def _run(
    ctx: Context, n: int, cancelling_s: float, budget: float, poll_interval_s: float | None
) -> dict[str, Any]:
    mode = "push" if poll_interval_s is not None else "poll"
    env = {**PLAIN_FOLLOW, "BCW_MAX_IN_FLIGHT": str(2 * n)}
    with Emulator() as emulator:
        topics = Topics(ctx.broker, 6, signals={} if poll_interval_s is not None else None)
        secret = _whsec() if poll_interval_s is not None else ""
        push = {"push_secret": secret, "push_poll_interval_s": f"{poll_interval_s:g}"} if secret else {}
        receiver: WorkerProc | None = None
        worker: WorkerProc | None = None
        observer = Observer(topics.bootstrap, topics.events)
        try:
            if secret:
                port = free_port()
                receiver = WorkerProc(
                    topics,
                    emulator,
                    ctx.log_dir,
                    name="receiver",
                    command="webhooks",
                    **push,
                    BCW_WEBHOOKS_HOST="127.0.0.1",
                    BCW_WEBHOOKS_PORT=str(port),
                )
                await asyncio.to_thread(receiver.wait_ready)
                url = f"http://127.0.0.1:{port}/webhooks/{PROVIDER}/default"
                emulator.push_to(PROVIDER, url, secret=secret, retry=RETRY)
            worker = WorkerProc(topics, emulator, ctx.log_dir, name=mode, budget=f"{budget:g}", **push, **env)
            await asyncio.to_thread(worker.wait_ready)
            await observer.start()
            batch_ids = _batches(emulator, n, f"{mode}{topics.tag}", cancelling_s)
            load_before = load_average()
            cpu0 = worker.cpu()
            rcpu0 = receiver.cpu() if receiver is not None else 0.0
            t0 = time.monotonic()
            batch_of: dict[str, str] = {}
            sent, _ = await publish_bulk(topics.bootstrap, topics.commands, batch_ids, batch_of)
            # The slowest follow's cancel goes out about n / budget s in; its batch ends cancelling_s later; a
            # lost push is caught by the safety poll poll_interval_s after the confirmation, a plain follow by
            # a poll at most 30 s after the end. Past that, something is broken: stop and report what came.
            wait_s = poll_interval_s if poll_interval_s is not None else cancelling_s + 60
            deadline = t0 + n / budget * 1.5 + wait_s + 120
            complete, timeline = await _wait(emulator, observer, worker, set(sent), deadline)
            wall = time.monotonic() - t0
            if secret:
                await _deliveries_settled(emulator, n, 30.0)
            cpu = worker.cpu() - cpu0
            rcpu = receiver.cpu() - rcpu0 if receiver is not None else 0.0
            load_after = load_average()
            result = _measure(emulator, observer, batch_of, cancelling_s=cancelling_s, pushed=bool(secret))
            deliveries = result["deliveries_delivered"]
            return result | {
                "mode": mode,
                "follows": n,
                "budget_rps": budget,
                "poll_interval_s": poll_interval_s,
                "complete": complete,
                "seconds": wall,
                "peak_requests_per_s": _peak_rate(timeline, "requests"),
                "peak_worker_cpu_share": _peak_rate(timeline, "worker_cpu_s"),
                "worker_run_queue_wait_s": timeline[-1]["worker_run_queue_wait_s"] if timeline else 0.0,
                "timeline": timeline,
                "worker_cpu_s": cpu,
                "worker_cpu_ms_per_follow": cpu * 1000 / n,
                "receiver_cpu_s": rcpu,
                "receiver_cpu_ms_per_delivery": rcpu * 1000 / deliveries if deliveries else float("nan"),
                "worker_metrics": _metrics(worker.port),
                "receiver_metrics": _metrics(receiver.port) if receiver is not None else {},
                "load_before": load_before,
                "load_after": load_after,
            }
        finally:
            await observer.stop()
            if worker is not None:
                worker.stop(timeout=60)
            if receiver is not None:
                receiver.stop(timeout=30)


def _batches(emulator: Emulator, n: int, prefix: str, cancelling_s: float) -> list[str]:
    """``n`` batches whose cancel ends ``cancelling_s`` after it is accepted, created 20,000 at a time."""
    ids: list[str] = []
    for start in range(0, n, 20_000):
        count = min(20_000, n - start)
        ids += emulator.create_batches(PROVIDER, count, prefix=f"{prefix}_{start}_", cancelling_s=cancelling_s)
    return ids


async def _wait(
    emulator: Emulator, observer: Observer, worker: WorkerProc, ids: set[str], deadline: float
) -> tuple[bool, list[dict[str, float]]]:
    """Until every final is in or the deadline: whether all came, and a timeline sampled about once a second
    (requests at the provider, finals read, the worker's CPU seconds and its seconds waiting for a CPU)."""
    t0, cpu0, wait0 = time.monotonic(), worker.cpu(), _run_queue_wait_s(worker.pid)
    timeline: list[dict[str, float]] = []
    while time.monotonic() < deadline:
        complete = await observer.wait_finals(ids, 1.0)
        timeline.append(
            {
                "t": round(time.monotonic() - t0, 2),
                "requests": _requests(emulator),
                "finals": len(observer.final_seen),
                "worker_cpu_s": round(worker.cpu() - cpu0, 2),
                "worker_run_queue_wait_s": round(_run_queue_wait_s(worker.pid) - wait0, 3),
            }
        )
        if complete:
            return True, timeline
    return False, timeline


def _run_queue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (``/proc/PID/task/*/schedstat``, field
    2, in ns): how much of a slow stretch was the machine's doing rather than the process's own work."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


def _peak_rate(timeline: list[dict[str, float]], key: str) -> float:
    """The highest per-second rate of a sampled counter."""
    return max(((b[key] - a[key]) / max(b["t"] - a["t"], 1e-9) for a, b in itertools.pairwise(timeline)), default=0.0)


def _requests(emulator: Emulator) -> int:
    return int(emulator.stats()["count"].get(f"dialect:{PROVIDER}", 0))


async def _deliveries_settled(emulator: Emulator, n: int, timeout: float) -> None:
    """Wait (bounded) until the emulator has nothing pending: a receiver's 200 can reach the emulator's record
    after the worker's final event, so the attempt counts would otherwise miss the last few."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = emulator.stats()["push"]
        if stats["pending"] == 0 and sum(stats["delivered"].values()) >= n:
            return
        await asyncio.sleep(0.5)


def _measure(
    emulator: Emulator, observer: Observer, batch_of: dict[str, str], *, cancelling_s: float, pushed: bool
) -> dict[str, Any]:
    """The per-batch figures from the emulator's request log and delivery records and the observer's finals."""
    wanted = set(batch_of.values())
    gets: Counter[str] = Counter()
    posted: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    for r in emulator.requests(dialect=PROVIDER):
        batch = r.get("batch_id")
        if batch not in wanted:
            continue
        statuses[int(r["status"])] += 1
        if r["method"] == "GET":
            gets[batch] += 1
        elif r["method"] == "POST" and int(r["status"]) == 200 and batch not in posted:
            posted[batch] = float(r["t_wall"])
    ended: dict[str, float] = {}
    lags: list[float] = []
    sends: list[float] = []
    attempts: Counter[str] = Counter()
    if pushed:
        for d in emulator.deliveries(dialect=PROVIDER):
            attempts[d["outcome"]] += 1
            if d["outcome"] == "delivered" and d["batch_id"] in wanted and d["batch_id"] not in ended:
                ended[d["batch_id"]] = d["changed_wall"]
                lags.append(d["t_done_mono"] - d["changed_mono"])  # batch end → the receiver's 200
                sends.append(d["t_mono"] - d["changed_mono"])  # batch end → the attempt leaves the emulator
    else:
        ended = {b: t + cancelling_s for b, t in posted.items()}
    seen: list[float] = []
    created: list[float] = []
    timer_lag: list[float] = []  # push: the emulator's end of a batch against its cancel POST + cancelling_s
    for cid, batch in batch_of.items():
        if cid not in observer.final_seen or batch not in ended:
            continue
        seen.append(observer.final_seen[cid] - ended[batch])
        created.append(observer.final_created[cid] - ended[batch])
        if pushed and batch in posted:
            timer_lag.append(ended[batch] - posted[batch] - cancelling_s)
    total_gets = sum(gets[b] for b in wanted)
    return {
        "finals": sum(1 for c in batch_of if c in observer.final_seen),
        "outcomes": dict(Counter(observer.outcomes.values())),
        "cancel_posts": len(posted),
        "gets": total_gets,
        "gets_per_follow": total_gets / max(1, len(wanted)),
        "gets_per_follow_histogram": {str(k): v for k, v in sorted(Counter(gets[b] for b in wanted).items())},
        "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "cancel_spread_s": max(posted.values()) - min(posted.values()) if posted else float("nan"),
        "measured_batches": len(seen),
        "terminal_to_final_seen_ms": percentiles(seen),
        "terminal_to_final_created_ms": percentiles(created),
        "deliveries_delivered": len(ended) if pushed else 0,
        "delivery_attempts": dict(attempts),
        "terminal_to_delivery_sent_ms": percentiles(sends),
        "terminal_to_delivered_ms": percentiles(lags),
        "emulator_end_after_due_ms": percentiles(timer_lag),
        "emulator_push_stats": emulator.stats()["push"] if pushed else {},
    }


def _metrics(port: int) -> dict[str, Any]:
    """The push counters (by label set) and histograms (count, sum) from a process's ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        if family.name in COUNTERS:
            values: dict[str, float] = defaultdict(float)
            for s in family.samples:
                if s.name.endswith("_total"):
                    values[",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))] += s.value
            out[family.name] = dict(values)
        elif family.name in HISTOGRAMS:
            found = {s.name.removeprefix(family.name): s.value for s in family.samples if "le" not in s.labels}
            buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
            out[family.name] = {"count": found.get("_count", 0.0), "sum": found.get("_sum", 0.0), "buckets": buckets}
    return out
