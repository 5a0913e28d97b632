"""The measurements themselves; each returns a plain dict that goes into the JSON results as is."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from batch_cancel_emulator.testing import DEFAULT_KEY, Emulator
from bench.stack import (
    PROVIDER,
    Observer,
    Proc,
    Topics,
    WorkerProc,
    load_average,
    peak_rss_mb,
    publish_bulk,
    publish_paced,
    rss_mb,
)
from devstack.broker import KafkaBroker
from worker.providers.transport import LeanAiohttpTransport

__all__ = [
    "FAST_FOLLOW",
    "HTTP_CONCURRENCY",
    "Context",
    "Sizes",
    "concurrent_follows",
    "http_ceiling",
    "kafka_ceiling",
    "latency",
    "many_follows",
    "naive_loop",
    "percentiles",
    "restore_follows",
    "storm",
    "worker_throughput",
]

#: The worker's per-account HTTP concurrency (``max_concurrency`` default); the HTTP ceiling uses the same.
HTTP_CONCURRENCY = 32
AUTH = {"Authorization": f"Bearer {DEFAULT_KEY}"}
#: Throughput and latency runs: the emulator cancels at once, so one GET 50 ms later sees ``cancelled``.
FAST_FOLLOW = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "0.05", "BCW_FOLLOW_MAX_INTERVAL_S": "1"}


@dataclass(frozen=True)
class Sizes:
    throughput: int = 20_000
    naive: int = 300
    ceiling: int = 20_000
    http_requests: int = 20_000
    http_seconds: float = 8.0
    rate: float = 200.0
    latency_s: float = 60.0
    follows: int = 10_000
    restore: int = 10_000
    many: int = 100_000
    many_budget: float = 500.0
    many_cancelling_s: float = 180.0
    cancelling_s: float = 60.0
    follow_max_interval_s: float = 30.0
    scale: int = 5_000
    scale_workers: tuple[int, ...] = (1, 2, 3)
    profile: int = 5_000
    push_follows: int = 10_000
    push_cancelling_s: float = 120.0
    push_budget: float = 300.0

    @staticmethod
    def quick() -> Sizes:
        return Sizes(
            throughput=3_000,
            naive=60,
            ceiling=3_000,
            http_requests=4_000,
            http_seconds=3.0,
            latency_s=20.0,
            follows=2_000,
            restore=2_000,
            many=5_000,
            many_cancelling_s=30.0,
            cancelling_s=20.0,
            scale=2_000,
            profile=3_000,
            push_follows=1_000,
            push_cancelling_s=20.0,
        )


@dataclass
class Context:
    broker: KafkaBroker
    log_dir: Path
    sizes: Sizes


def percentiles(values: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles in milliseconds of values given in seconds (plus the max)."""
    if not values:
        return {f"p{p}": float("nan") for p in points} | {"max": float("nan")}
    ordered = sorted(values)
    out = {f"p{p}": ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] * 1000 for p in points}
    return out | {"max": ordered[-1] * 1000}


def _deadline_for(n: int, per_second_floor: float, extra: float) -> float:
    return n / per_second_floor + extra


async def _start_workers(ctx: Context, topics: Topics, emulator: Emulator, count: int, **env: str) -> list[WorkerProc]:
    procs = [WorkerProc(topics, emulator, ctx.log_dir, name=f"worker{i}", **env) for i in range(count)]
    try:
        for p in procs:
            await asyncio.to_thread(p.wait_ready)
        if count > 1:
            await asyncio.sleep(3.0)  # let the group settle on its final assignment before the clock starts
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return procs


class _Profiler:
    """``py-spy record`` on one process; SIGINT makes it write its collapsed stacks.

    Blocking mode (the process is paused for each sample): ``--nonblocking`` reads the stacks of a running
    interpreter and on this machine tore about 40 % of them, which then belonged to no function.
    """

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        self.out = out
        self.rate = rate
        argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--full-filenames"]
        argv += ["--format", "raw", "-o", str(out)]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def worker_throughput(
    ctx: Context, n: int, *, workers: int = 1, partitions: int = 6, profile_to: Path | None = None
) -> dict[str, Any]:
    """Publish ``n`` commands as fast as possible; commands/s from the first publish to the last final event."""
    with Emulator() as emulator:
        topics = Topics(ctx.broker, partitions)
        batch_ids = emulator.create_batches(PROVIDER, n, prefix=f"tp{topics.tag}_", cancelling_polls=0)
        procs = await _start_workers(ctx, topics, emulator, workers, **FAST_FOLLOW)
        observer = Observer(topics.bootstrap, topics.events)
        profiler: _Profiler | None = None
        try:
            await observer.start()
            if profile_to is not None:
                profiler = _Profiler(procs[0].pid, profile_to)
                await asyncio.sleep(1.0)  # py-spy attaches
            load_before = load_average()
            cpu0 = [p.cpu() for p in procs]
            t_cpu0 = time.monotonic()
            sent, t_first = await publish_bulk(topics.bootstrap, topics.commands, batch_ids)
            t_published = time.time()
            complete = await observer.wait_finals(set(sent), _deadline_for(n, 25, 60))
            cpu = [p.cpu() - c for p, c in zip(procs, cpu0, strict=True)]
            wall_cpu = time.monotonic() - t_cpu0
            if profiler is not None:
                profiler.stop()
            finals = [observer.final_seen[c] for c in sent if c in observer.final_seen]
            t_last = max(finals) if finals else time.time()
            stats = emulator.stats()
            result = {
                "commands": n,
                "workers": workers,
                "partitions": partitions,
                "complete": complete,
                "finals": len(finals),
                "outcomes": dict(Counter(observer.outcomes.values())),
                "events": observer.events,
                "seconds": t_last - t_first,
                "publish_seconds": t_published - t_first,
                "commands_per_s": len(finals) / (t_last - t_first),
                "http_requests": stats["count"].get(f"dialect:{PROVIDER}", 0),
                "worker_cpu_s": cpu,
                "worker_cpu_share": [c / wall_cpu for c in cpu],  # 1.0 = one core busy the whole time
                "worker_cpu_ms_per_command": sum(cpu) * 1000 / max(len(finals), 1),
                "worker_peak_rss_mb": [peak_rss_mb(p.pid) for p in procs],
                "load_before": load_before,
                "load_after": load_average(),
            }
        finally:
            if profiler is not None:
                profiler.stop()
            await observer.stop()
            for p in procs:
                p.stop()
    return result


async def _baseline(ctx: Context, mode: str, n: int, seconds: float) -> dict[str, Any]:
    with Emulator() as emulator:
        topics = Topics(ctx.broker, 6)
        batch_ids = emulator.create_batches(PROVIDER, n, prefix=f"{mode}{topics.tag}_", cancelling_polls=0)
        argv = [sys.executable, "-m", "bench.baselines", mode, "--bootstrap", topics.bootstrap]
        argv += ["--commands", topics.commands, "--events", topics.events, "--group", topics.group]
        argv += ["--url", emulator.base_url(PROVIDER), "--interval", FAST_FOLLOW["BCW_FOLLOW_INITIAL_INTERVAL_S"]]
        argv += ["--count", str(n), "--seconds", str(seconds)]
        proc = Proc(argv, dict(os.environ), f"{mode}-{topics.tag}", ctx.log_dir)
        observer = Observer(topics.bootstrap, topics.events)
        try:
            await observer.start()
            await asyncio.sleep(2.0)  # the baseline joins its group (it prints nothing before it works)
            load_before = load_average()
            cpu0 = proc.cpu()
            sent, t_first = await publish_bulk(topics.bootstrap, topics.commands, batch_ids)
            complete = await observer.wait_finals(set(sent), seconds + 10)
            cpu = proc.cpu() - cpu0
            finals = [observer.final_seen[c] for c in sent if c in observer.final_seen]
            t_last = max(finals) if finals else time.time()
            result = {
                "commands": n,
                "complete": complete,
                "finals": len(finals),
                "seconds": t_last - t_first,
                "commands_per_s": len(finals) / (t_last - t_first),
                "cpu_s": cpu,
                "cpu_ms_per_command": cpu * 1000 / max(len(finals), 1),
                "load_before": load_before,
                "load_after": load_average(),
            }
            await asyncio.to_thread(proc.wait, 30)
        finally:
            await observer.stop()
            proc.kill()
    return result


async def naive_loop(ctx: Context, n: int) -> dict[str, Any]:
    """getone → httpx cancel → sleep/poll → produce → commit, one command at a time, as its own process."""
    return await _baseline(ctx, "naive", n, seconds=max(60.0, n * 0.5))


async def kafka_ceiling(ctx: Context, n: int) -> dict[str, Any]:
    """Consume + produce two events + commit, no HTTP: the most the Kafka side of the pipe allows."""
    return await _baseline(ctx, "relay", n, seconds=max(60.0, n / 100))


Call = Callable[[str, str], Awaitable[int]]  # (method, path under the base URL) -> HTTP status


async def _pairs(call: Call, batch_ids: list[str], seconds: float) -> tuple[float, float]:
    """``(requests/s, CPU ms of this process per request)``: cancel then retrieve each batch, as the worker
    does, from ``HTTP_CONCURRENCY`` loops until the batches or ``seconds`` run out (after a short warm-up)."""
    ids = iter(batch_ids)
    done = 0

    async def loop(deadline: float) -> None:
        nonlocal done
        for batch_id in ids:
            if time.perf_counter() > deadline:
                return
            for method, path in (("POST", f"/batches/{batch_id}/cancel"), ("GET", f"/batches/{batch_id}")):
                status = await call(method, path)
                if status != 200:
                    raise RuntimeError(f"{method} {path}: unexpected status {status}")
            done += 2

    await asyncio.gather(*(loop(time.perf_counter() + 1.0) for _ in range(HTTP_CONCURRENCY)))
    done = 0
    before, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(loop(started + seconds) for _ in range(HTTP_CONCURRENCY)))
    wall, cpu = time.perf_counter() - started, time.process_time() - before
    return done / wall, cpu * 1000 / max(done, 1)


async def _raw_aiohttp(base: str, batch_ids: list[str], seconds: float) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=HTTP_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:

        async def call(method: str, path: str) -> int:
            async with session.request(method, base + path) as response:
                json.loads(await response.read())
                return response.status

        return await _pairs(call, batch_ids, seconds)


async def _httpx_on(
    transport: httpx.AsyncBaseTransport, base: str, batch_ids: list[str], seconds: float
) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=HTTP_CONCURRENCY, max_keepalive_connections=HTTP_CONCURRENCY)
    async with httpx.AsyncClient(transport=transport, limits=limits, headers=AUTH, trust_env=False) as client:

        async def call(method: str, path: str) -> int:
            response = await client.request(method, base + path)
            response.json()
            return response.status_code

        return await _pairs(call, batch_ids, seconds)


async def _provider_client(ctx: Context, base: str, batch_ids: list[str], seconds: float) -> tuple[float, float]:
    """The worker's own ``ProviderClient`` (httpx, its transport, budget gate, tenacity, parsing, metrics)."""
    from worker.config import load_providers
    from worker.providers import build_clients

    os.environ.setdefault("BENCH_KEY", DEFAULT_KEY)
    providers = ctx.log_dir / "providers-client.yaml"
    providers.write_text(
        f"providers:\n  {PROVIDER}:\n    dialect: {PROVIDER}\n    base_url: {base}\n"
        f"    max_requests_per_s: 100000\n    max_concurrency: {HTTP_CONCURRENCY}\n"
        "    accounts:\n      default: { api_key_env: BENCH_KEY }\n"
    )
    client = build_clients(load_providers(providers))[PROVIDER]

    async def call(method: str, path: str) -> int:
        batch_id = path.split("/")[2]
        if method == "POST":
            await client.cancel("default", batch_id)
        else:
            await client.retrieve("default", batch_id)
        return 200

    try:
        return await _pairs(call, batch_ids, seconds)
    finally:
        await client.aclose()


async def http_ceiling(ctx: Context) -> dict[str, Any]:
    """Requests/s and client CPU per request, layer by layer, each doing what the worker does per command: cancel
    a fresh batch, then retrieve it, at the worker's concurrency, against the same emulator."""
    sizes = ctx.sizes
    seconds = sizes.http_seconds
    pairs = sizes.http_requests // 2
    with Emulator() as emulator:
        base = emulator.base_url(PROVIDER)

        def fresh() -> list[str]:
            return emulator.create_batches(PROVIDER, pairs, cancelling_polls=0)

        load_before = load_average()
        raw, raw_cpu = await _raw_aiohttp(base, fresh(), seconds)
        limits = httpx.Limits(max_connections=HTTP_CONCURRENCY, max_keepalive_connections=HTTP_CONCURRENCY)
        via_httpx, httpx_cpu = await _httpx_on(AiohttpTransport(limits=limits), base, fresh(), seconds)
        lean, lean_cpu = await _httpx_on(LeanAiohttpTransport(limits), base, fresh(), seconds)
        client, client_cpu = await _provider_client(ctx, base, fresh(), seconds)
    return {
        "concurrency": HTTP_CONCURRENCY,
        "raw_aiohttp_rps": raw,
        "raw_aiohttp_cpu_ms": raw_cpu,
        "httpx_aiohttp_transport_rps": via_httpx,
        "httpx_aiohttp_transport_cpu_ms": httpx_cpu,
        "httpx_lean_transport_rps": lean,
        "httpx_lean_transport_cpu_ms": lean_cpu,
        "provider_client_rps": client,
        "provider_client_cpu_ms": client_cpu,
        # The worker makes two requests per command (POST cancel, one GET); the ceiling in commands/s:
        "commands_per_s": raw / 2,
        "load_before": load_before,
        "load_after": load_average(),
    }


def _gauges(worker: WorkerProc, names: tuple[str, ...]) -> dict[str, float]:
    """Current values of some unlabelled gauges from a worker's /metrics (empty when it does not answer)."""
    try:
        _, text = worker.get("/metrics")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            out[name] = float(value)
    return out


async def _sample(worker: WorkerProc, stop: asyncio.Event, every: float = 0.5) -> dict[str, float]:
    """Peaks of the worker's RSS, commands in flight and paused partitions while ``stop`` is not set."""
    peaks = {"rss_mb": 0.0, "in_flight": 0.0, "paused_partitions": 0.0, "paused_samples": 0.0, "samples": 0.0}
    names = ("bcw_commands_in_flight", "bcw_paused_partitions")
    while not stop.is_set():
        gauges = await asyncio.to_thread(_gauges, worker, names)
        peaks["rss_mb"] = max(peaks["rss_mb"], rss_mb(worker.pid))
        peaks["in_flight"] = max(peaks["in_flight"], gauges.get("bcw_commands_in_flight", 0.0))
        paused = gauges.get("bcw_paused_partitions", 0.0)
        peaks["paused_partitions"] = max(peaks["paused_partitions"], paused)
        peaks["paused_samples"] += paused > 0
        peaks["samples"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return peaks


async def latency(ctx: Context, rate: float, seconds: float, **env: str) -> dict[str, Any]:
    """A steady ``rate``: publish → cancel request at the emulator, and publish → final event seen.

    Also samples the worker's RSS, commands in flight and paused partitions; ``env`` configures the worker
    (the overload run bounds its in-flight commands to show back-pressure)."""
    n = int(rate * seconds)
    with Emulator() as emulator:
        topics = Topics(ctx.broker, 6)
        batch_ids = emulator.create_batches(PROVIDER, n, prefix=f"lat{topics.tag}_", cancelling_polls=0)
        (worker,) = await _start_workers(ctx, topics, emulator, 1, **FAST_FOLLOW, **env)
        observer = Observer(topics.bootstrap, topics.events)
        sampling = asyncio.Event()
        sampler = asyncio.create_task(_sample(worker, sampling))
        try:
            await observer.start()
            load_before = load_average()
            cpu0 = worker.cpu()
            t0 = time.monotonic()
            sent, batch_of, achieved = await publish_paced(topics.bootstrap, topics.commands, batch_ids, rate)
            complete = await observer.wait_finals(set(sent), max(60.0, n / 25))
            sampling.set()
            peaks = await sampler
            cpu = worker.cpu() - cpu0
            wall = time.monotonic() - t0
            cancel_at: dict[str, float] = {}
            for entry in emulator.requests(dialect=PROVIDER):
                if entry["op"] == "cancel" and entry["batch_id"] not in cancel_at:
                    cancel_at[entry["batch_id"]] = float(entry["t_wall"])
            to_cancel = [cancel_at[batch_of[c]] - t for c, t in sent.items() if batch_of[c] in cancel_at]
            to_final = [observer.final_seen[c] - t for c, t in sent.items() if c in observer.final_seen]
            to_final_sent = [observer.final_created[c] - t for c, t in sent.items() if c in observer.final_created]
            timeline = sorted((sent[c] - min(sent.values()), (cancel_at[batch_of[c]] - sent[c]) * 1000) for c in sent)
            result = {
                "rate": rate,
                "achieved_rate": achieved,
                "seconds": seconds,
                "commands": n,
                "complete": complete,
                "publish_to_cancel_call_ms": percentiles(to_cancel),
                "publish_to_final_seen_ms": percentiles(to_final),
                "publish_to_final_produced_ms": percentiles(to_final_sent),
                "worker_cpu_share": cpu / wall,
                "worker_peak_rss_mb": peak_rss_mb(worker.pid),
                "worker_alive": worker.alive(),
                "peaks": peaks,
                "finals": len(to_final),
                "completed_per_s": _completed_per_s(sent, observer.final_seen),
                "env": env,
                "load_before": load_before,
                "load_after": load_average(),
                "samples_ms": {
                    "cancel_call": [round(v * 1000, 2) for v in to_cancel],
                    "final_seen": [round(v * 1000, 2) for v in to_final],
                },
                "cancel_timeline": [(round(t, 3), round(v, 2)) for t, v in timeline[:: max(1, len(timeline) // 3000)]],
            }
        finally:
            sampling.set()
            await asyncio.gather(sampler, return_exceptions=True)
            await observer.stop()
            worker.stop()
    return result


def _completed_per_s(sent: dict[str, float], finals: dict[str, float]) -> float:
    """Finals per second from the first publish to the last final seen."""
    done = [finals[c] for c in sent if c in finals]
    return len(done) / max(max(done) - min(sent.values()), 1e-9) if done else 0.0


#: The overload run's bound on commands in flight: small, so that back-pressure (paused intake) shows within a
#: minute; production's default is 100,000 (``BCW_MAX_IN_FLIGHT``).
OVERLOAD_IN_FLIGHT = 2_000


async def overload(ctx: Context, capacity: float, seconds: float) -> dict[str, Any]:
    """1.5 x the measured capacity for ``seconds``: intake pauses, memory stays bounded, every command finishes."""
    result = await latency(ctx, 1.5 * capacity, seconds, BCW_MAX_IN_FLIGHT=str(OVERLOAD_IN_FLIGHT))
    return result | {"capacity": capacity, "max_in_flight": OVERLOAD_IN_FLIGHT}


async def restore_follows(ctx: Context, n: int) -> dict[str, Any]:
    """A rolling restart of one worker holding ``n`` live follows: how fast it leaves, how fast the next
    process has them back (read from the follows topic to its end and resumed), and how many cancels the
    move cost (the target: none)."""
    env = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "1", "BCW_FOLLOW_MAX_INTERVAL_S": "30"}
    with Emulator() as emulator:
        topics = Topics(ctx.broker, 6)
        batch_ids = emulator.create_batches(PROVIDER, n, prefix=f"res{topics.tag}_", cancelling_s=3600)
        (first,) = await _start_workers(ctx, topics, emulator, 1, **env)
        try:
            await publish_bulk(topics.bootstrap, topics.commands, batch_ids)
            deadline = time.monotonic() + 60 + n / 50
            while _posts(emulator) < n or not await _caught_up(topics):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {_posts(emulator)} of {n} cancels after the deadline")
                await asyncio.sleep(0.5)
            t0 = time.monotonic()
            await asyncio.to_thread(first.stop, 60.0)
            exit_s = time.monotonic() - t0
            t1 = time.monotonic()
            second = WorkerProc(topics, emulator, ctx.log_dir, name="worker-next", **env)
            try:
                restored, restore_s = 0, 0.0
                while restored < n:
                    if time.monotonic() - t1 > 120:
                        raise RuntimeError(f"restored {restored} of {n} follows in 120 s:\n{second.log_tail()}")
                    await asyncio.sleep(0.2)
                    found = second.log_events("follows_resumed")
                    restored = sum(int(r["follows"]) for r in found)
                    restore_s = max((float(r["seconds"]) for r in found), default=0.0)
                start_to_restored = time.monotonic() - t1
                rss = rss_mb(second.pid)
            finally:
                second.stop(timeout=30)
            return {
                "follows": n,
                "exit_s": exit_s,
                "restore_s": restore_s,
                "start_to_restored_s": start_to_restored,
                "cancel_posts": _posts(emulator),
                "posts_after_move": _posts(emulator) - n,
                "rss_after_restore_mb": rss,
            }
        finally:
            first.kill()


def _posts(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests(dialect=PROVIDER) if r["method"] == "POST")


async def _caught_up(topics: Topics) -> bool:
    from tests.support.events import committed_vs_end

    committed, ends = await committed_vs_end(topics.bootstrap, topics.commands, topics.group)
    return all(committed.get(p, 0) == end for p, end in ends.items())


async def concurrent_follows(ctx: Context, n: int, cancelling_s: float, max_interval_s: float) -> dict[str, Any]:
    """``n`` batches that stay ``cancelling`` for ``cancelling_s``: memory, CPU and GET rate of one worker."""
    env = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "1", "BCW_FOLLOW_MAX_INTERVAL_S": str(max_interval_s)}
    with Emulator() as emulator:
        topics = Topics(ctx.broker, 6)
        batch_ids = emulator.create_batches(PROVIDER, n, prefix=f"fol{topics.tag}_", cancelling_s=cancelling_s)
        (worker,) = await _start_workers(ctx, topics, emulator, 1, **env)
        observer = Observer(topics.bootstrap, topics.events)
        timeline: list[dict[str, float]] = []
        try:
            await observer.start()
            load_before = load_average()
            rss_idle = rss_mb(worker.pid)
            cpu0 = worker.cpu()
            t0 = time.monotonic()
            sent, t_first = await publish_bulk(topics.bootstrap, topics.commands, batch_ids)
            ids = set(sent)
            deadline = t0 + cancelling_s + 2 * max_interval_s + n / 50 + 60
            complete = False
            while time.monotonic() < deadline:
                complete = await observer.wait_finals(ids, 1.0)
                requests = emulator.stats()["count"].get(f"dialect:{PROVIDER}", 0)
                timeline.append(
                    {
                        "t": round(time.monotonic() - t0, 2),
                        "requests": requests,
                        "finals": len(observer.final_seen),
                        "rss_mb": round(rss_mb(worker.pid), 1),
                        "cpu_s": round(worker.cpu() - cpu0, 2),
                    }
                )
                if complete:
                    break
            wall = time.monotonic() - t0
            cpu = worker.cpu() - cpu0
            total = emulator.stats()["count"].get(f"dialect:{PROVIDER}", 0)
            gets = total - n  # one POST per batch (no faults in this scenario), the rest are GETs
            finals = [observer.final_seen[c] for c in sent if c in observer.final_seen]
            result = {
                "batches": n,
                "cancelling_s": cancelling_s,
                "follow_initial_interval_s": 1.0,
                "follow_max_interval_s": max_interval_s,
                "complete": complete,
                "finals": len(finals),
                "outcomes": dict(Counter(observer.outcomes.values())),
                "seconds": (max(finals) if finals else time.time()) - t_first,
                "worker_peak_rss_mb": peak_rss_mb(worker.pid),
                "worker_rss_before_mb": rss_idle,
                "worker_cpu_s": cpu,
                "worker_cpu_share": cpu / wall,
                "http_requests": total,
                "gets": gets,
                "gets_per_s": gets / wall,
                "gets_per_batch": gets / n,
                "peak_requests_per_s": max(
                    (b["requests"] - a["requests"]) / max(b["t"] - a["t"], 1e-9)
                    for a, b in itertools.pairwise(timeline)
                )
                if len(timeline) > 1
                else 0.0,
                "load_before": load_before,
                "load_after": load_average(),
                "timeline": timeline,
            }
        finally:
            await observer.stop()
            worker.stop(timeout=30)
    return result


def _short(frame: str) -> str:
    """``func (/…/site-packages/pkg/mod.py:12)`` → ``func (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3", str(Path(__file__).resolve().parent.parent) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            path = path.split("/", 1)[1] if marker == "/lib/python3" else path
            break
    return f"{name} ({path})"


def _package(frame: str) -> str:
    path = frame.partition(" (")[2]
    top = path.split("/", 1)[0].rstrip(")")
    if top.endswith(".py"):
        return "stdlib:" + top.removesuffix(".py")
    return top


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Collapsed py-spy stacks → where the samples went: by package (inclusive, self) and by function."""
    total = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    package_self: Counter[str] = Counter()
    if not raw.exists():
        return {"samples": 0, "error": "py-spy wrote no profile"}
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        self_time[frames[-1]] += count
        package_self[_package(frames[-1])] += count
        for f in set(frames):
            inclusive[f] += count
        for name in {_package(f) for f in frames}:
            packages[name] += count
    share = 1 / max(total, 1)
    return {
        "samples": total,
        "by_package_inclusive": {k: round(v * share, 3) for k, v in packages.most_common(14)},
        "by_package_self": {k: round(v * share, 3) for k, v in package_self.most_common(14)},
        "top_self": [(f, round(v * share, 3)) for f, v in self_time.most_common(top)],
        "top_inclusive": [(f, round(v * share, 3)) for f, v in inclusive.most_common(top * 4)],
    }


async def _probe(emulator: Emulator, topics: Topics, rate: float, count: int, tag: str) -> list[float]:
    """Publish ``count`` fresh cancels at ``rate``/s; their publish → cancel POST delays, from the emulator."""
    probes = emulator.create_batches(PROVIDER, count, prefix=f"probe{tag}{topics.tag}_", cancelling_s=3600)
    sent, batch_of, _ = await publish_paced(topics.bootstrap, topics.commands, probes, rate)
    delays: list[float] = []
    deadline = time.monotonic() + 60
    by_batch = {b: c for c, b in batch_of.items()}
    while len(delays) < count and time.monotonic() < deadline:
        delays = []
        for batch in probes:
            posts = [r for r in emulator.requests(batch_id=batch) if r["method"] == "POST"]
            if posts:
                delays.append(float(posts[0]["t_wall"]) - sent[by_batch[batch]])
        await asyncio.sleep(0.5)
    return delays


async def many_follows(ctx: Context, n: int, cancelling_s: float, budget: float) -> dict[str, Any]:
    """``n`` follows in one process against one account with a request budget: every final, the GET rate
    against the budget (the emulator's own counts per second), memory per follow, CPU per poll, and how
    fast a new cancel gets out while they are polled, beside the same on an idle worker."""
    env = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "1", "BCW_FOLLOW_MAX_INTERVAL_S": "30", "BCW_MAX_IN_FLIGHT": str(2 * n)}
    with Emulator() as emulator:
        topics = Topics(ctx.broker, 6)
        worker = WorkerProc(topics, emulator, ctx.log_dir, name="many", budget=str(budget), **env)
        await asyncio.to_thread(worker.wait_ready)
        observer = Observer(topics.bootstrap, topics.events)
        try:
            await observer.start()
            idle = await _probe(emulator, topics, 5.0, 50, "idle")
            rss_idle = rss_mb(worker.pid)
            batch_ids: list[str] = []
            for start in range(0, n, 20_000):
                batch_ids += emulator.create_batches(
                    PROVIDER, min(20_000, n - start), prefix=f"many{start}_{topics.tag}_", cancelling_s=cancelling_s
                )
            cpu0 = worker.cpu()
            t0 = time.monotonic()
            sent, _ = await publish_bulk(topics.bootstrap, topics.commands, batch_ids)
            per_second: list[float] = []
            last = emulator.stats()["count"].get(f"dialect:{PROVIDER}", 0)
            last_t = time.monotonic()
            loaded: list[float] = []
            probe: asyncio.Task[list[float]] | None = None
            deadline = t0 + cancelling_s + n / 100 + 300
            complete = False
            while time.monotonic() < deadline:
                complete = await observer.wait_finals(set(sent), 1.0)
                count = emulator.stats()["count"].get(f"dialect:{PROVIDER}", 0)
                now = time.monotonic()
                per_second.append((count - last) / (now - last_t))  # requests per second over the sample
                last, last_t = count, now
                if probe is None and count >= n + n // 2:  # every cancel out and polling under way
                    probe = asyncio.create_task(_probe(emulator, topics, 5.0, 50, "busy"))
                if complete:
                    break
            if probe is not None:
                loaded = await probe
            wall = time.monotonic() - t0
            cpu = worker.cpu() - cpu0
            total = emulator.stats()["count"].get(f"dialect:{PROVIDER}", 0)
            gets = total - n - 100  # one POST per batch and per probe; every other request is a GET
            peak = peak_rss_mb(worker.pid)
            return {
                "follows": n,
                "budget_rps": budget,
                "cancelling_s": cancelling_s,
                "complete": complete,
                "finals": sum(1 for c in sent if c in observer.final_seen),
                "seconds": wall,
                "peak_requests_per_s": max(per_second, default=0),
                "requests": total,
                "gets": gets,
                "worker_peak_rss_mb": peak,
                "worker_rss_idle_mb": rss_idle,
                "kb_per_follow": (peak - rss_idle) * 1024 / n,
                "worker_cpu_s": cpu,
                "cpu_ms_per_request": 1000 * cpu / max(1, total),
                "probe_idle_ms": percentiles(idle),
                "probe_loaded_ms": percentiles(loaded),
            }
        finally:
            await observer.stop()
            worker.stop(timeout=60)


async def storm(ctx: Context, n: int, budget: float, quota: float, storm_s: float) -> dict[str, Any]:
    """A 429 storm: the provider cuts the account's quota to ``quota``/s for ``storm_s`` mid-run, then lifts it."""
    env = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "0.2", "BCW_FOLLOW_MAX_INTERVAL_S": "1"}
    with Emulator() as emulator:
        topics = Topics(ctx.broker, 6)
        worker = WorkerProc(topics, emulator, ctx.log_dir, name="storm", budget=str(budget), **env)
        await asyncio.to_thread(worker.wait_ready)
        observer = Observer(topics.bootstrap, topics.events)
        try:
            await observer.start()
            batch_ids = emulator.create_batches(PROVIDER, n, prefix=f"storm{topics.tag}_", cancelling_s=storm_s + 20)
            sent, _ = await publish_bulk(topics.bootstrap, topics.commands, batch_ids)
            await asyncio.sleep(5)  # steady polling first (a benchmark, not a test: it only shapes the run)
            emulator.set_quota(PROVIDER, quota, retry_after_s=1.0)
            storm_start = time.monotonic()
            await asyncio.sleep(storm_s)
            emulator.set_quota(PROVIDER, None)
            complete = await observer.wait_finals(set(sent), storm_s + 120)
            log = emulator.requests(dialect=PROVIDER)
            during = [r for r in log if storm_start <= r["t_mono"] < storm_start + storm_s]
            refused = sum(1 for r in during if r["status"] == 429)
            return {
                "follows": n,
                "budget_rps": budget,
                "quota_rps": quota,
                "storm_s": storm_s,
                "complete": complete,
                "finals": sum(1 for c in sent if c in observer.final_seen),
                "requests_during_storm_per_s": len(during) / storm_s,
                "answered_during_storm_per_s": (len(during) - refused) / storm_s,
                "refused_share": refused / max(1, len(during)),
            }
        finally:
            await observer.stop()
            worker.stop(timeout=60)
