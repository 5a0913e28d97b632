"""The local stack behind ``make dev``: a real Kafka broker, the provider emulator, one worker and the webhook
receiver (the emulator pushes OpenAI's batch events to it, as OpenAI would: docs/push.md); with
``BCW_DEV_PROMETHEUS=1`` (or ``--prometheus``) also the Prometheus the tests use, scraping the worker with the
chart's alert rules loaded, so the dashboard's queries and the alerts can be watched live.

Each part's output is shown in this terminal with a prefix. Ctrl-C (or SIGTERM) stops the worker
gracefully, then the emulator and the broker; every child is also bound to this process with
``PR_SET_PDEATHSIG``, so even a killed stack leaves nothing running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import IO

from devstack.broker import KafkaBroker, spawn
from devstack.dev_credentials import aws_env, dev_providers_file, write_trusted_service_account_key
from devstack.prometheus import RULES, Prometheus, dashboard_queries, graph_url
from worker.config import load_providers
from worker.contract.topics import (
    COMMANDS_TOPIC,
    DLQ_TOPIC,
    EVENTS_TOPIC,
    FOLLOWS_TOPIC,
    FOLLOWS_TOPIC_CONFIG,
    SIGNALS_TOPIC,
)

DEV_TOPICS = {
    COMMANDS_TOPIC: 6,
    EVENTS_TOPIC: 6,
    DLQ_TOPIC: 1,
    FOLLOWS_TOPIC: 6,  # compacted, as many partitions as commands (docs/durable-follows.md)
    SIGNALS_TOPIC: 3,
}
TOPIC_CONFIGS = {FOLLOWS_TOPIC: FOLLOWS_TOPIC_CONFIG}
EMULATOR_PORT = 8090
PROMETHEUS_PORT = 9090
WORKER_METRICS_PORT = 9464
WEBHOOKS_PORT = 8088
#: The OpenAI account's webhook secret in providers.dev.yaml (a throw-away, like the emulator's API key).
DEV_WEBHOOK_SECRET = "whsec_ZGV2LXdlYmhvb2stc2VjcmV0LW5vdC1mb3ItcHJvZHVjdGlvbg=="  # noqa: S105 - dev only
#: Dialects whose dev account pushes (providers.dev.yaml): their demo batches end 3 s after the cancel, unpolled,
#: and the emulator pushes the end to the receiver.
PUSHED = ("openai",)
DEV_KEY = "sk-emulator"
HERE = Path(__file__).resolve().parent


def _pipe(prefix: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"[{prefix}] {line.decode(errors='replace')}")
        sys.stdout.flush()


def _spawn(prefix: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = spawn(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # Ctrl-C reaches only the stack, which stops the parts in order
    )
    assert proc.stdout is not None
    threading.Thread(target=_pipe, args=(prefix, proc.stdout), daemon=True).start()
    return proc


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


DEMO_BATCHES = ("batch_demo", "batch_demo2", "batch_demo3")
#: The cloud providers' ids have formats of their own (the worker validates them before they reach a URL).
CLOUD_DEMO_BATCHES = {
    "gemini": ("batch-demo", "batch-demo2", "batch-demo3"),
    "vertex": ("1001", "1002", "1003"),
    "bedrock": ("batchdemo001", "batchdemo002", "batchdemo003"),
}


def _dev_dialects() -> list[str]:
    """Every dialect providers.dev.yaml configures (each provider there is named after its dialect)."""
    return sorted({p.dialect for p in load_providers(HERE / "providers.dev.yaml").providers.values()})


def _admin_post(emulator_port: int, path: str, body: dict[str, object]) -> None:
    """One call to the emulator's admin API (setup, not load: a plain blocking request)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{emulator_port}/_admin/{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - loopback, fixed URL


def _preload_demo_batches(emulator_port: int) -> None:
    """A few batches in every dialect, so the README's first ``batch-cancel publish`` has something to stop."""
    for dialect in _dev_dialects():
        for batch_id in CLOUD_DEMO_BATCHES.get(dialect, DEMO_BATCHES):
            scenario = {"cancelling_s": 3} if dialect in PUSHED else {"cancelling_polls": 3}
            _admin_post(emulator_port, "batches", {"dialect": dialect, "id": batch_id, "scenario": scenario})
    for dialect in PUSHED:  # before any cancel: a timed cancel is pushed only when its dialect has a target
        url = f"http://127.0.0.1:{WEBHOOKS_PORT}/webhooks/{dialect}/default"
        _admin_post(emulator_port, "push", {"dialect": dialect, "url": url, "secret": DEV_WEBHOOK_SECRET})
    print(f"[stack] emulator pushes {', '.join(PUSHED)} batch events to the receiver on :{WEBHOOKS_PORT}", flush=True)
    print(f"[stack] emulator has batches {', '.join(DEMO_BATCHES)} in every dialect", flush=True)
    for dialect, ids in CLOUD_DEMO_BATCHES.items():
        print(f"[stack]   {dialect}: {', '.join(ids)}", flush=True)


def _start_prometheus(metrics_port: int) -> Prometheus:
    """The tests' Prometheus, on a fixed loopback port, scraping the dev worker every 5 s. Not installed from
    here: ``make dev`` changes nothing on the machine, so a missing binary is one line saying what to run."""
    prometheus = Prometheus(
        {"worker": f"127.0.0.1:{metrics_port}"},
        rule_files=[RULES],
        namespace="dev",
        scrape_s=5.0,
        port=PROMETHEUS_PORT,
        install=False,
    )
    try:
        prometheus.start()
    except RuntimeError as exc:
        raise SystemExit(f"[stack] {exc}") from None
    queries = [query for _, query, _ in dashboard_queries("dev", "1m")]
    print(f"[stack] Prometheus {prometheus.url} (alerts: {prometheus.url}/alerts); every dashboard query:", flush=True)
    print(f"  {graph_url(prometheus.url, queries)}", flush=True)
    return prometheus


def _start_worker_and_receiver(
    broker: KafkaBroker, providers_file: Path, metrics_port: int
) -> list[subprocess.Popen[bytes]]:
    """The worker, and the webhook receiver beside it (its metrics on the next port)."""
    env = {
        **os.environ,
        **aws_env(),
        "BCW_FOLLOW_INITIAL_INTERVAL_S": "0.5",
        "BCW_FOLLOW_MAX_INTERVAL_S": "5",
        "BCW_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "BCW_PROVIDERS_FILE": str(providers_file),
        "BCW_LOG_FORMAT": "console",
        "BCW_METRICS_HOST": "127.0.0.1",
        "BCW_METRICS_PORT": str(metrics_port),
        **{f"DEV_{d.upper()}_API_KEY": DEV_KEY for d in _dev_dialects()},
        **{f"DEV_{d.upper()}_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET for d in PUSHED},
    }
    receiver_env = {
        **env,
        "BCW_WEBHOOKS_HOST": "127.0.0.1",
        "BCW_WEBHOOKS_PORT": str(WEBHOOKS_PORT),
        "BCW_METRICS_PORT": str(metrics_port + 1),
    }
    return [
        _spawn("worker", [sys.executable, "-m", "worker", "run"], env),
        _spawn("webhooks", [sys.executable, "-m", "worker", "webhooks"], receiver_env),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--kafka-port", type=int, default=9092, help="broker port on 127.0.0.1 (default 9092)")
    parser.add_argument(
        "--emulator-port", type=int, default=EMULATOR_PORT, help=f"emulator port on 127.0.0.1 (default {EMULATOR_PORT})"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=WORKER_METRICS_PORT,
        help=f"the worker's metrics and health port on 127.0.0.1 (default {WORKER_METRICS_PORT})",
    )
    parser.add_argument("--no-worker", action="store_true", help="start broker and emulator only")
    parser.add_argument(
        "--prometheus",
        action="store_true",
        default=os.environ.get("BCW_DEV_PROMETHEUS", "") not in ("", "0"),
        help=f"also run Prometheus on 127.0.0.1:{PROMETHEUS_PORT} scraping the worker (env BCW_DEV_PROMETHEUS=1)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    broker = KafkaBroker(port=args.kafka_port)
    # The throw-away service-account key and the providers file naming it (removed on exit).
    secrets_dir = Path(tempfile.mkdtemp(prefix="bcw-dev-"))
    children: list[subprocess.Popen[bytes]] = []
    prometheus: Prometheus | None = None
    print(f"[stack] starting Kafka broker on {broker.bootstrap_servers} (data in {broker.data_dir})", flush=True)
    try:
        broker.start()
        for topic, partitions in DEV_TOPICS.items():
            broker.create_topic(topic, partitions, TOPIC_CONFIGS.get(topic))
        print(f"[stack] Kafka {broker.version()} ready; topics: {', '.join(DEV_TOPICS)}", flush=True)
        emulator_args = [sys.executable, "-m", "batch_cancel_emulator", "--host", "127.0.0.1"]
        emulator_args += ["--port", str(args.emulator_port)]
        children.append(_spawn("emulator", emulator_args))
        _wait_port(args.emulator_port)
        _preload_demo_batches(args.emulator_port)
        emulator_url = f"http://127.0.0.1:{args.emulator_port}"
        key_file = write_trusted_service_account_key(secrets_dir, emulator_url)
        providers_file = dev_providers_file(HERE / "providers.dev.yaml", key_file, emulator_url, secrets_dir)
        if not args.no_worker:
            children += _start_worker_and_receiver(broker, providers_file, args.metrics_port)
        if args.prometheus:
            prometheus = _start_prometheus(args.metrics_port)
            children.append(prometheus.process)
        print(
            f"[stack] up: emulator {emulator_url}, metrics http://127.0.0.1:{args.metrics_port}/metrics;"
            " Ctrl-C stops all"
        )
        sys.stdout.flush()
        while not stop.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    print(f"[stack] a child exited with {child.returncode}; stopping", flush=True)
                    stop.set()
    finally:
        print("[stack] stopping", flush=True)
        if prometheus is not None:
            prometheus.stop()
        for child in reversed(children):
            _stop(child)
        broker.close()
        shutil.rmtree(secrets_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
