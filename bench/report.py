"""Turn one run's results into a table, a JSON file, a PNG and the figures section of ``docs/benchmarks.md``."""

# ruff: noqa: RUF001 - the tables are Markdown for people: en dashes and multiplication signs are meant
from __future__ import annotations

import itertools
import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["machine", "plot", "table", "targets", "write_docs", "write_json"]

DOC_BEGIN = "<!-- bench:figures:begin (written by `python -m bench --write-docs`) -->"
DOC_END = "<!-- bench:figures:end -->"


def _run(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": _run("nproc"),
        "cpu_model": model,
        "free_h": _run("free", "-h"),
        "uptime_start": _run("uptime"),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _f(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b else float("nan")


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """``(target, measured, met)``; ``met`` is None when the measurement was not run."""
    out: list[tuple[str, str, bool | None]] = []
    tp = r.get("throughput", {}).get("commands_per_s")
    naive = r.get("naive", {}).get("commands_per_s")
    http = r.get("http_ceiling", {}).get("commands_per_s")
    if tp:
        out.append(("≥ 1,000 commands/s, one worker process", f"{tp:,.0f}/s", tp >= 1000))
    if tp and naive:
        out.append(("≥ 20× the naive loop", f"{tp / naive:,.0f}×", tp / naive >= 20))
    if tp and http:
        out.append(("≥ 50 % of the HTTP ceiling", f"{tp / http:.0%}", tp / http >= 0.5))
    client = r.get("http_ceiling", {}).get("provider_client_rps")
    httpx_rps = r.get("http_ceiling", {}).get("httpx_aiohttp_transport_rps")
    if tp and naive:
        out.append(("≥ 40× the naive loop", f"{tp / naive:,.0f}×", tp / naive >= 40))
    if tp and client:
        share = tp / (client / 2)
        out.append(("worker ≥ 0.8 × its own ProviderClient ceiling", f"{share:.2f}", share >= 0.8))
    if client and httpx_rps:
        share = client / httpx_rps
        out.append(("ProviderClient ≥ 0.85 × httpx on the aiohttp transport", f"{share:.2f}", share >= 0.85))
    fol = r.get("follows")
    if fol:
        ok = fol["worker_peak_rss_mb"] < 250 and fol["complete"]
        out.append(
            (
                f"{fol['batches']:,} follows under 250 MB RSS, all finals",
                f"{fol['worker_peak_rss_mb']:.0f} MB, {fol['finals']:,} finals",
                ok,
            )
        )
    lat = r.get("latency")
    if lat:
        p99 = lat["publish_to_cancel_call_ms"]["p99"]
        out.append((f"p99 publish→cancel call < 100 ms at {lat['rate']:.0f}/s", f"{p99:.0f} ms", p99 < 100))
    o = r.get("overload")
    if o:
        # The bound is checked before each fetch, so the batch in hand (up to 500 records) still goes in.
        bounded = o["peaks"]["in_flight"] <= o["max_in_flight"] + 500 and o["peaks"]["paused_samples"] > 0
        ok = o["finals"] == o["commands"] and o["worker_alive"] and bounded
        measured = f"{o['finals']:,}/{o['commands']:,} finals, peak {o['peaks']['rss_mb']:.0f} MB"
        out.append(("at 1.5 × capacity: intake paused, bounded, every command ends", measured, ok))
    pu = r.get("push")
    if pu:
        ratio = pu["gets_ratio"]
        out.append(("push: ≥ 5× fewer GETs per follow", f"{ratio:.1f}×", pu["target_gets_ratio_met"]))
        p99 = pu["push"]["terminal_to_final_seen_ms"]["p99"]
        out.append(("push: batch terminal → final event p99 < 1 s", f"{p99:,.0f} ms", pu["target_p99_met"]))
    return out


def table(r: dict[str, Any]) -> str:
    lines: list[str] = []
    sections = (
        _throughput_rows,
        _latency_rows,
        _overload_rows,
        _follow_rows,
        _restore_rows,
        _many_rows,
        _push_rows,
        _scale_rows,
        _target_rows,
        _profile_rows,
    )
    for section in sections:
        rows = section(r)
        if rows:
            lines += [*rows, ""]
    return "\n".join(lines)


def _many_rows(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    m, st = r.get("many"), r.get("storm")
    if m:
        idle, busy = m["probe_idle_ms"], m["probe_loaded_ms"]
        lines += [
            "| follows in one process, one account with a budget | follows | finals | peak req/s (budget) "
            "| peak RSS | KB per follow | CPU ms per request | new cancel p99 idle → loaded |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            f"| batches cancelling {m['cancelling_s']:.0f} s | {m['follows']:,} | {m['finals']:,} "
            f"| {m['peak_requests_per_s']:,.0f} ({m['budget_rps']:,.0f}) | {m['worker_peak_rss_mb']:.0f} MB "
            f"| {m['kb_per_follow']:.1f} | {m['cpu_ms_per_request']:.2f} "
            f"| {idle.get('p99', float('nan')):.0f} → {busy.get('p99', float('nan')):.0f} ms |",
        ]
    if st:
        lines += [
            "",
            "| 429 storm | follows | budget | quota in the storm | asked / answered per s in the storm | refused "
            "| finals |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| quota cut for {st['storm_s']:.0f} s, then lifted | {st['follows']:,} | {st['budget_rps']:.0f}/s "
            f"| {st['quota_rps']:.0f}/s | {st['requests_during_storm_per_s']:.0f} "
            f"/ {st['answered_during_storm_per_s']:.0f} "
            f"| {st['refused_share']:.0%} | {st['finals']:,} |",
        ]
    return lines


def _counter(metrics: dict[str, Any], name: str, label: str) -> float:
    """The sum of a counter's series whose labels include ``label`` (``result=polled``), 0 when none."""
    return float(sum(v for k, v in metrics.get(name, {}).items() if label in k.split(",")))


def _mean(metrics: dict[str, Any], name: str) -> float:
    """A histogram's mean in ms, NaN when it has no samples."""
    h = metrics.get(name, {})
    return float(h["sum"] / h["count"] * 1000) if h.get("count") else float("nan")


def _push_rows(r: dict[str, Any]) -> list[str]:
    pu = r.get("push")
    if not pu:
        return []
    a, b = pu["push"], pu["poll"]

    def both(key: str, digits: int = 0) -> str:
        return f"{_f(a.get(key), digits)} | {_f(b.get(key), digits)}"

    def pcts(key: str) -> str:
        return " | ".join(f"{_f(m[key]['p50'])} / {_f(m[key]['p99'])} / {_f(m[key]['max'])}" for m in (a, b))

    wm, rm = a["worker_metrics"], a["receiver_metrics"]
    signals = f"{_counter(wm, 'bcw_signals', 'result=polled'):,.0f} polled, "
    signals += f"{_counter(wm, 'bcw_signals', 'result=not_held'):,.0f} not held"
    attempts = a["delivery_attempts"]
    deliveries = ", ".join(f"{v:,} {k}" for k, v in sorted(attempts.items()))
    answers = rm.get("bcw_webhook_deliveries", {})
    results = ", ".join(f"{v:,.0f} {k.partition('result=')[2]}" for k, v in answers.items() if v)
    return [
        f"| push against polling: {pu['follows']:,} OpenAI follows, `cancelling` {pu['cancelling_s']:.0f} s, "
        f"account budget {pu['budget_rps']:,.0f}/s | with push (safety poll {pu['poll_interval_s']:g} s) "
        "| without (1 s → 30 s) |",
        "|---|---:|---:|",
        f"| finals | {_f(a['finals'])} | {_f(b['finals'])} |",
        f"| **GETs per follow** | **{_f(a['gets_per_follow'], 2)}** | **{_f(b['gets_per_follow'], 2)}** |",
        f"| GETs per follow, spread (GETs: follows) | {a['gets_per_follow_histogram']} "
        f"| {b['gets_per_follow_histogram']} |",
        f"| **batch terminal → final event read**, p50 / p99 / max ms | {pcts('terminal_to_final_seen_ms')} |",
        f"| batch terminal → final event written (CreateTime), p50 / p99 / max ms "
        f"| {pcts('terminal_to_final_created_ms')} |",
        f"| worker CPU per follow (ms) | {both('worker_cpu_ms_per_follow', 2)} |",
        f"| receiver CPU per delivery (ms) | {_f(a['receiver_cpu_ms_per_delivery'], 2)} | – |",
        f"| worker: seconds runnable but waiting for a CPU, over the run | {both('worker_run_queue_wait_s', 1)} |",
        f"| peak requests/s at the provider | {both('peak_requests_per_s')} |",
        f"| cancels accepted over (s) | {both('cancel_spread_s', 1)} |",
        f"| batch terminal → the receiver's 200, p50 / p99 ms "
        f"| {_f(a['terminal_to_delivered_ms']['p50'])} / {_f(a['terminal_to_delivered_ms']['p99'])} | – |",
        f"| delivery attempts; the receiver's answers | {deliveries}; {results} | – |",
        "| delivery verified → the worker's poll answered (bcw_signal_poll_seconds), mean ms "
        f"| {_f(_mean(wm, 'bcw_signal_poll_seconds'))} | – |",
        f"| signals read by the worker; routine polls saved | {signals}; "
        f"{_counter(wm, 'bcw_push_polls_saved', 'provider=openai'):,.0f} | – |",
        f"| load average before → after | {a['load_before']} → {a['load_after']} "
        f"| {b['load_before']} → {b['load_after']} |",
    ]


def _restore_rows(r: dict[str, Any]) -> list[str]:
    res = r.get("restore")
    if not res:
        return []
    return [
        "| rolling restart of a worker holding live follows | follows | SIGTERM → exit | restored in "
        "| next start → all resumed | cancels re-sent | RSS after |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| read back from the follows topic and resumed | {res['follows']:,} | {res['exit_s']:.1f} s "
        f"| **{res['restore_s']:.1f} s** | {res['start_to_restored_s']:.1f} s | {res['posts_after_move']} "
        f"| {res['rss_after_restore_mb']:.0f} MB |",
    ]


def _throughput_rows(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    add = lines.append
    tp, naive, relay, http = (r.get(k, {}) for k in ("throughput", "naive", "kafka_ceiling", "http_ceiling"))
    if not (tp or naive or relay or http):
        return lines
    add("| throughput (first publish → last final event) | N | commands/s | ours ÷ this | CPU ms per command |")
    add("|---|---:|---:|---:|---:|")
    ours = tp.get("commands_per_s")
    if tp:
        cpu, rss = tp["worker_cpu_share"][0], tp["worker_peak_rss_mb"][0]
        extra = f" (CPU {cpu:.0%} of a core, peak RSS {rss:.0f} MB)"
        add(
            f"| **worker, 1 process**{extra} | {tp['commands']:,} | **{_f(ours)}** | 1.0 "
            f"| {_f(tp['worker_cpu_ms_per_command'], 2)} |"
        )
    if naive:
        add(
            f"| naive loop (getone → cancel → poll → produce → commit) | {naive['commands']:,} "
            f"| {_f(naive['commands_per_s'], 1)} | {_f(_ratio(ours, naive['commands_per_s']), 1)}× "
            f"| {_f(naive['cpu_ms_per_command'], 2)} |"
        )
    if relay:
        add(
            f"| Kafka ceiling: consume + 2 produces + commit, no HTTP | {relay['commands']:,} "
            f"| {_f(relay['commands_per_s'])} | {_f(_ratio(ours, relay['commands_per_s']), 2)} "
            f"| {_f(relay['cpu_ms_per_command'], 2)} |"
        )
    if http:
        c = http["concurrency"]
        for label, key in (
            (f"HTTP ceiling: raw aiohttp, cancel + retrieve, c={c}", "raw_aiohttp"),
            (f"httpx on httpx-aiohttp's transport, c={c}", "httpx_aiohttp_transport"),
            (f"httpx on the worker's lean transport, c={c}", "httpx_lean_transport"),
            (f"the worker's ProviderClient (+ budget gate, tenacity, parsing), c={c}", "provider_client"),
        ):
            if f"{key}_rps" not in http:  # a results file from before the row existed
                continue
            rps, cpu_ms = http[f"{key}_rps"], http[f"{key}_cpu_ms"]
            add(
                f"| {label}: {_f(rps)} req/s ÷ 2 requests per command | – | {_f(rps / 2)} "
                f"| {_f(_ratio(ours, rps / 2), 2)} | {_f(2 * cpu_ms, 2)} |"
            )
    return lines


def _overload_rows(r: dict[str, Any]) -> list[str]:
    o = r.get("overload")
    if not o:
        return []
    p = o["peaks"]
    paused = p["paused_samples"] / max(p["samples"], 1)
    return [
        f"| overload: {o['achieved_rate']:,.0f}/s offered (1.5 × {o['capacity']:,.0f}/s) for {o['seconds']:.0f} s, "
        f"at most {o['max_in_flight']:,} in flight | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} (ms) | " + " | ".join(_f(o[key][q], 1) for q in ("p50", "p95", "p99", "max")) + " |"
            for label, key in (
                ("publish → cancel request at the provider", "publish_to_cancel_call_ms"),
                ("publish → final event read by a consumer", "publish_to_final_seen_ms"),
            )
        ),
        f"| finals {o['finals']:,} of {o['commands']:,}, completed at {o['completed_per_s']:,.0f}/s; "
        f"peak in flight {p['in_flight']:,.0f}; intake paused in {paused:.0%} of samples; "
        f"peak RSS {p['rss_mb']:.0f} MB; worker {'alive' if o['worker_alive'] else 'DEAD'} |||||",
    ]


def _latency_rows(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    add = lines.append
    lat = r.get("latency")
    if lat:
        add(
            f"| latency at {lat['rate']:.0f}/s for {lat['seconds']:.0f} s "
            f"({lat['commands']:,} commands, achieved {lat['achieved_rate']:.0f}/s) | p50 | p95 | p99 | max |"
        )
        add("|---|---:|---:|---:|---:|")
        for label, key in (
            ("publish → cancel request at the provider (ms)", "publish_to_cancel_call_ms"),
            ("publish → final event read by a consumer (ms)", "publish_to_final_seen_ms"),
        ):
            p = lat[key]
            add(f"| {label} | {_f(p['p50'], 1)} | {_f(p['p95'], 1)} | {_f(p['p99'], 1)} | {_f(p['max'], 1)} |")
        add(
            f"| (worker CPU {lat['worker_cpu_share']:.0%} of a core, peak RSS {lat['worker_peak_rss_mb']:.0f} MB) |||||"
        )
    return lines


def _follow_rows(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    add = lines.append
    fol = r.get("follows")
    if fol:
        add(
            f"| {fol['batches']:,} concurrent follows, `cancelling` {fol['cancelling_s']:.0f} s, poll interval "
            f"{fol['follow_initial_interval_s']:g} s → {fol['follow_max_interval_s']:g} s | value |"
        )
        add("|---|---:|")
        add(f"| final events arrived | {fol['finals']:,} of {fol['batches']:,} {dict(fol['outcomes'])} |")
        add(
            f"| worker peak RSS (VmHWM) | {fol['worker_peak_rss_mb']:.0f} MB "
            f"(idle {fol['worker_rss_before_mb']:.0f} MB) |"
        )
        add(f"| worker CPU over the run | {fol['worker_cpu_s']:.1f} s = {fol['worker_cpu_share']:.0%} of a core |")
        add(
            f"| GETs to the provider | {fol['gets']:,} = {fol['gets_per_batch']:.1f} per batch, "
            f"{fol['gets_per_s']:.0f}/s mean, peak {fol['peak_requests_per_s']:.0f} requests/s |"
        )
        add(f"| first publish → last final event | {fol['seconds']:.1f} s |")
    return lines


def _scale_rows(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    add = lines.append
    scale = r.get("scale_out")
    if scale:
        add(
            "| scale-out: processes on a 6-partition topic | N | commands/s | × one process "
            "| CPU of each (share of a core) |"
        )
        add("|---|---:|---:|---:|---|")
        base = scale[0]["commands_per_s"]
        for s in scale:
            cpus = ", ".join(f"{c:.0%}" for c in s["worker_cpu_share"])
            add(
                f"| {s['workers']} | {s['commands']:,} | {_f(s['commands_per_s'])} "
                f"| {_f(s['commands_per_s'] / base, 2)} | {cpus} |"
            )
    return lines


def _target_rows(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    add = lines.append
    tg = targets(r)
    if tg:
        add("| target | measured | met |")
        add("|---|---:|:---:|")
        for name, value, met in tg:
            add(f"| {name} | {value} | {'yes' if met else 'NO'} |")
    return lines


def _profile_rows(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    add = lines.append
    prof = r.get("profile")
    if prof and prof.get("samples"):
        add(f"profile of the worker (py-spy, {prof['samples']:,} samples, {prof['commands']:,} commands):")
        add(
            "  inclusive share by package: "
            + ", ".join(f"{k} {v:.0%}" for k, v in prof["by_package_inclusive"].items())
        )
        add("  top self time: " + "; ".join(f"{f} {v:.1%}" for f, v in prof["top_self"][:8]))
    return lines


def write_json(r: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1, default=str) + "\n")


def plot(r: dict[str, Any], path: Path) -> bool:
    """Throughput bars, latency distributions and the follow run's timeline, in one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    _plot_throughput(axes[0], r)
    _plot_latency(axes[1], r)
    _plot_follows(axes[2], r)
    fig.suptitle(f"batch-cancel-worker benchmarks ({r.get('mode', '')}), {r['machine']['nproc']} cores, loaded machine")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_throughput(ax: Any, r: dict[str, Any]) -> None:
    bars: list[tuple[str, float]] = []
    if r.get("naive"):
        bars.append(("naive\nloop", r["naive"]["commands_per_s"]))
    if r.get("throughput"):
        bars.append(("worker", r["throughput"]["commands_per_s"]))
    for s in r.get("scale_out", [])[1:]:
        bars.append((f"worker\n×{s['workers']}", s["commands_per_s"]))
    if r.get("http_ceiling"):
        bars.append(("HTTP\nceiling", r["http_ceiling"]["commands_per_s"]))
    if r.get("kafka_ceiling"):
        bars.append(("Kafka\nceiling", r["kafka_ceiling"]["commands_per_s"]))
    if bars:
        colors = ["#bbbbbb" if "naive" in n else "#d9822b" if "ceiling" in n else "#2b6cd9" for n, _ in bars]
        ax.bar([n for n, _ in bars], [v for _, v in bars], color=colors)
        for i, (_, v) in enumerate(bars):
            ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=9)
        ax.set_ylabel("commands / s (first publish → last final event)")
        ax.set_title("Throughput")
        ax.tick_params(axis="x", labelsize=8)


def _plot_latency(ax: Any, r: dict[str, Any]) -> None:
    lat = r.get("latency")
    if lat:
        for key, label in (("cancel_call", "publish → cancel request"), ("final_seen", "publish → final event")):
            values = sorted(lat["samples_ms"][key])
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.plot(values, ys, label=label)
        ax.axvline(100, color="red", linestyle=":", label="100 ms target (cancel p99)")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("fraction of commands")
        ax.set_title(f"Latency CDF at {lat['rate']:.0f} commands/s for {lat['seconds']:.0f} s")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)


def _plot_follows(ax: Any, r: dict[str, Any]) -> None:
    fol = r.get("follows")
    if fol and fol.get("timeline"):
        tl = fol["timeline"]
        ts = [p["t"] for p in tl]
        raw = [0.0] + [(b["requests"] - a["requests"]) / max(b["t"] - a["t"], 1e-9) for a, b in itertools.pairwise(tl)]
        rates = [sum(raw[max(0, i - 4) : i + 1]) / len(raw[max(0, i - 4) : i + 1]) for i in range(len(raw))]
        ax.plot(ts, rates, label="HTTP requests/s to the provider (5-s mean)", color="#d9822b")
        ax.set_xlabel("s since first publish")
        ax.set_ylabel("requests / s")
        ax2 = ax.twinx()
        top = max(*(p["rss_mb"] for p in tl), 250.0) * 1.1
        ax2.plot(ts, [p["rss_mb"] for p in tl], label="worker RSS (MB)", color="#2b6cd9")
        ax2.axhline(250, color="#2b6cd9", linestyle=":", label="250 MB target")
        ax2.plot(ts, [p["finals"] / max(fol["batches"], 1) * top for p in tl], label="share of finals in", color="g")
        ax2.set_ylim(0, top * 1.05)
        ax2.set_ylabel("MB")
        ax.set_title(f"{fol['batches']:,} batches cancelling {fol['cancelling_s']:.0f} s")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")


def write_docs(r: dict[str, Any], path: Path) -> None:
    """Replace the figures section of ``docs/benchmarks.md`` (between the markers), keep the prose around it."""
    m = r["machine"]
    figures = [
        DOC_BEGIN,
        "",
        f"Run of {r['started']} on commit {r.get('worker_commit', '?')} (`{r['command']}`, {r['runtime_s']:.0f} s).",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']}, "
        f"Kafka {r.get('kafka_version', '?')}.",
        "",
        "```",
        "$ free -h",
        m["free_h"],
        "$ uptime  # at start, and at the end of the run",
        m["uptime_start"],
        r.get("uptime_end", "?"),
        "```",
        "",
        table(r),
        "",
        "![throughput, latency and follows](benchmarks.png)",
        "",
        DOC_END,
    ]
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{DOC_BEGIN}\n{DOC_END}\n"
    if DOC_BEGIN in text and DOC_END in text:
        head, _, rest = text.partition(DOC_BEGIN)
        _, _, tail = rest.partition(DOC_END)
        text = head + "\n".join(figures) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(figures) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
