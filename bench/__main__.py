"""``python -m bench`` (``make bench``): every benchmark of issue 12 in one run, side by side, as ratios.

One private Kafka broker (Apache Kafka's own jars, ``devstack.broker``) and a fresh provider emulator per
measurement, all on loopback. The worker always runs as its own process, as in production; the naive loop
and the Kafka ceiling run as their own processes too. In order:

1. throughput of one worker (``--throughput`` commands, emulator cancels at once, 50 ms follow interval),
   the naive loop on fewer commands, the Kafka ceiling (consume + produce, no HTTP) and the HTTP ceiling
   (raw aiohttp at the worker's concurrency);
2. latency at a steady ``--rate`` for ``--latency-seconds``; then overload: 1.5 x the measured throughput for
   as long, with in-flight commands bounded, to show intake pausing, memory bounded and every command ending;
3. ``--follows`` batches that stay ``cancelling`` for ``--cancelling-seconds``: RSS, CPU, GET rate, finals;
   then a rolling restart of a worker holding ``--restore`` live follows: exit time, restore time, cancels
   re-sent;
4. scale-out: 1, 2, 3 worker processes on a 6-partition topic;
5. a py-spy profile of one worker during a throughput run (``--no-profile`` to skip);
6. push against polling (issue 28): ``--push-follows`` OpenAI batches that take 120 s to cancel, once at an
   account that pushes to the receiver, once at one that polls, each at a ``--push-budget`` requests/s account.

Prints a table; writes ``bench/results/latest.json``, a timestamped copy and ``bench/results/latest.png``;
``--write-docs`` also updates the figures section of ``docs/benchmarks.md`` and ``docs/benchmarks.png``.
``--quick`` scales everything down (about three minutes) for checking the scripts themselves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import push, report, scenarios, selector
from bench.stack import make_log_dir
from devstack.broker import KafkaBroker
from worker import process

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DOCS = ROOT.parent / "docs"
ALL = (
    "throughput",
    "latency",
    "overload",
    "follows",
    "restore",
    "many",
    "storm",
    "kill",
    "scale",
    "profile",
    "push",
)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes everywhere (checks the scripts, ~3 min)")
    p.add_argument("--only", nargs="+", choices=ALL, default=list(ALL), help="run only these parts")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    p.add_argument("--throughput", type=int, help="commands for the one-worker throughput run")
    p.add_argument("--naive", type=int, help="commands for the naive loop")
    p.add_argument("--rate", type=float, help="latency run: commands per second")
    p.add_argument("--latency-seconds", type=float, help="latency run: how long")
    p.add_argument("--follows", type=int, help="batches followed at once")
    p.add_argument("--cancelling-seconds", type=float, help="how long each of those stays cancelling")
    p.add_argument("--follow-max-interval", type=float, help="BCW_FOLLOW_MAX_INTERVAL_S for the follows run")
    p.add_argument("--restore", type=int, help="live follows handed over in the restore run")
    p.add_argument("--many", type=int, help="follows held by one process in the budget run")
    p.add_argument("--scale", type=int, help="commands per scale-out run")
    p.add_argument("--workers", type=int, nargs="+", help="scale-out: worker process counts")
    p.add_argument("--push-follows", type=int, help="push against polling: follows in each run")
    p.add_argument("--push-budget", type=float, help="push against polling: the account's requests/s")
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md and docs/benchmarks.png")
    p.add_argument("--replot", type=Path, metavar="JSON", help="only redraw table, PNG (and docs) from a results file")
    p.add_argument("--results", type=Path, default=RESULTS, help="where JSON, PNG, profile and logs go")
    return p.parse_args(argv)


def _sizes(args: argparse.Namespace) -> scenarios.Sizes:
    sizes = scenarios.Sizes.quick() if args.quick else scenarios.Sizes()
    overrides: dict[str, Any] = {
        "throughput": args.throughput,
        "naive": args.naive,
        "rate": args.rate,
        "latency_s": args.latency_seconds,
        "follows": args.follows,
        "restore": args.restore,
        "many": args.many,
        "cancelling_s": args.cancelling_seconds,
        "follow_max_interval_s": args.follow_max_interval,
        "scale": args.scale,
        "scale_workers": tuple(args.workers) if args.workers else None,
        "push_follows": args.push_follows,
        "push_budget": args.push_budget,
    }
    if args.throughput:
        overrides["ceiling"] = args.throughput
    return dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _overload(ctx: scenarios.Context, results: dict[str, Any]) -> None:
    s = ctx.sizes
    capacity = results.get("throughput", {}).get("commands_per_s") or s.rate
    bound = scenarios.OVERLOAD_IN_FLIGHT
    _say(f"overload: 1.5 x {capacity:.0f}/s for {s.latency_s:.0f} s, at most {bound:,} in flight")
    results["overload"] = await scenarios.overload(ctx, capacity, s.latency_s)
    o = results["overload"]
    _say(f"  {o['finals']:,}/{o['commands']:,} finals, peak RSS {o['peaks']['rss_mb']:.0f} MB")


async def _run(ctx: scenarios.Context, parts: set[str], results: dict[str, Any]) -> None:
    s = ctx.sizes
    if "throughput" in parts:
        _say(f"throughput: worker, {s.throughput:,} commands")
        results["throughput"] = await scenarios.worker_throughput(ctx, s.throughput)
        _say(f"  {results['throughput']['commands_per_s']:,.0f} commands/s")
        _say(f"throughput: naive loop, {s.naive:,} commands")
        results["naive"] = await scenarios.naive_loop(ctx, s.naive)
        _say(f"  {results['naive']['commands_per_s']:,.1f} commands/s")
        _say(f"throughput: Kafka ceiling, {s.ceiling:,} commands")
        results["kafka_ceiling"] = await scenarios.kafka_ceiling(ctx, s.ceiling)
        _say(f"  {results['kafka_ceiling']['commands_per_s']:,.0f} commands/s")
        _say("throughput: HTTP ceiling")
        results["http_ceiling"] = await scenarios.http_ceiling(ctx)
        _say(f"  {results['http_ceiling']['raw_aiohttp_rps']:,.0f} requests/s")
    if "latency" in parts:
        _say(f"latency: {s.rate:.0f}/s for {s.latency_s:.0f} s")
        results["latency"] = await scenarios.latency(ctx, s.rate, s.latency_s)
        _say(f"  p99 publish→cancel {results['latency']['publish_to_cancel_call_ms']['p99']:.0f} ms")
    if "overload" in parts:
        await _overload(ctx, results)
    if "follows" in parts:
        _say(f"follows: {s.follows:,} batches cancelling {s.cancelling_s:.0f} s")
        results["follows"] = await scenarios.concurrent_follows(ctx, s.follows, s.cancelling_s, s.follow_max_interval_s)
        _say(f"  peak RSS {results['follows']['worker_peak_rss_mb']:.0f} MB, {results['follows']['finals']:,} finals")
    if "restore" in parts:
        _say(f"restore: rolling restart of a worker holding {s.restore:,} follows")
        results["restore"] = await scenarios.restore_follows(ctx, s.restore)
        r = results["restore"]
        _say(f"  exit {r['exit_s']:.1f} s, restored in {r['restore_s']:.1f} s, {r['posts_after_move']} cancels re-sent")
    if "many" in parts:
        _say(f"many: {s.many:,} follows at one account with a budget of {s.many_budget:,.0f} requests/s")
        results["many"] = await scenarios.many_follows(ctx, s.many, s.many_cancelling_s, s.many_budget)
        m = results["many"]
        _say(f"  {m['finals']:,} finals, peak {m['peak_requests_per_s']:,.0f} req/s, {m['worker_peak_rss_mb']:.0f} MB")
    if "storm" in parts:
        await _storm(ctx, results)
    if "kill" in parts:
        await _kill_switch(ctx, results)
    if "scale" in parts:
        results["scale_out"] = []
        for n in s.scale_workers:
            _say(f"scale-out: {n} worker process(es), {s.scale:,} commands")
            run = await scenarios.worker_throughput(ctx, s.scale, workers=n)
            results["scale_out"].append(run)
            _say(f"  {run['commands_per_s']:,.0f} commands/s")
    if "profile" in parts:
        await _profile(ctx, results)
    if "push" in parts:
        await _push(ctx, results)


async def _profile(ctx: scenarios.Context, results: dict[str, Any]) -> None:
    s = ctx.sizes
    out = ctx.log_dir / "profile.raw.txt"
    _say(f"profile: py-spy on one worker, {s.profile:,} commands")
    run = await scenarios.worker_throughput(ctx, s.profile, profile_to=out)
    results["profile"] = {"commands": s.profile, "commands_per_s": run["commands_per_s"], "raw": str(out)}
    results["profile"] |= scenarios.summarize_profile(out)


async def _push(ctx: scenarios.Context, results: dict[str, Any]) -> None:
    s = ctx.sizes
    _say(
        f"push: {s.push_follows:,} follows cancelling {s.push_cancelling_s:.0f} s at {s.push_budget:,.0f}/s, "
        "with push, then without"
    )
    results["push"] = r = await push.push_against_polling(ctx, s.push_follows, s.push_cancelling_s, s.push_budget)
    for mode in ("push", "poll"):
        m = r[mode]
        _say(
            f"  {mode}: {m['finals']:,} finals, {m['gets_per_follow']:.2f} GETs per follow, terminal → final "
            f"p50 {m['terminal_to_final_seen_ms']['p50']:,.0f} / p99 {m['terminal_to_final_seen_ms']['p99']:,.0f} ms"
        )


async def _storm(ctx: scenarios.Context, results: dict[str, Any]) -> None:
    _say("storm: quota cut to 50/s for 20 s under a 200/s budget")
    results["storm"] = await scenarios.storm(ctx, 2_000, 200.0, 50.0, 20.0)
    _say(f"  {results['storm']['finals']:,} finals, {results['storm']['refused_share']:.0%} refused in the storm")


async def _kill_switch(ctx: scenarios.Context, results: dict[str, Any]) -> None:
    """The issue's sizes (10,000 matching among 12,000 at 100/s); ``--quick`` scales them by ten."""
    quick = ctx.sizes.throughput < scenarios.Sizes().throughput
    n, others = (1_000, 200) if quick else (10_000, 2_000)
    _say(f"kill switch: {n:,} matching batches among {n + others:,}, budget 100/s")
    results["kill_switch"] = k = await selector.kill_switch(ctx, n, others, 100.0)
    _say(
        f"  last cancel after {k['seconds_to_last_post']:.0f} s ({k['ratio_to_budget']:.2f} x the budget), "
        f"lists {k['list_share']:.1%} of requests, plain cancel p99 {k['plain_cancel_ms']['p99']:.0f} ms"
    )


def _publish(results: dict[str, Any], args: argparse.Namespace, log_dir: Path | None) -> None:
    print(report.table(results))
    png = args.results / "latest.png"
    if report.plot(results, png) and log_dir is not None:
        shutil.copy(png, log_dir / "results.png")
    if args.write_docs:
        report.write_docs(results, DOCS / "benchmarks.md")
        if png.exists():
            shutil.copy(png, DOCS / "benchmarks.png")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.replot is not None:
        _publish(json.loads(args.replot.read_text()), args, None)
        return 0
    parts = set(args.only) - ({"profile"} if args.no_profile else set())
    sizes = _sizes(args)
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = make_log_dir(args.results / f"run-{stamp}")
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sizes": dataclasses.asdict(sizes),
        "machine": report.machine(),
        "worker_commit": os.environ.get("BENCH_COMMIT") or report._run("git", "rev-parse", "--short", "HEAD"),
        "logs": str(log_dir),
    }
    _say(f"starting a private Kafka broker; logs in {log_dir}")
    broker = KafkaBroker(heap="768m")
    try:
        broker.start()
        results["kafka_version"] = broker.version()
        # The worker's own runtime (its event loop and garbage-collector threshold), so that the HTTP ceiling rows,
        # which run in this process, compare with the worker like with like.
        process.tune_collector()
        process.run(_run(scenarios.Context(broker, log_dir, sizes), parts, results))
    finally:
        broker.close()
        results["runtime_s"] = time.monotonic() - started
        results["uptime_end"] = report._run("uptime")
        report.write_json(results, log_dir / "results.json")
    report.write_json(results, args.results / "latest.json")
    _publish(results, args, log_dir)
    print(
        f"runtime {results['runtime_s']:.0f} s; results in {args.results / 'latest.json'} and {args.results}/latest.png"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
