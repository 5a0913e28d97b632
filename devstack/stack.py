"""The local stack behind ``make dev``: a real Kafka broker, the provider emulator and one worker.

Each part's output is shown in this terminal with a prefix. Ctrl-C (or SIGTERM) stops the worker
gracefully, then the emulator and the broker; every child is also bound to this process with
``PR_SET_PDEATHSIG``, so even a killed stack leaves nothing running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import IO

from devstack.broker import KafkaBroker, _die_with_parent

DEV_TOPICS = {
    "batch-cancel.commands": 6,
    "batch-cancel.events": 6,
    "batch-cancel.dlq": 1,
    "batch-cancel.follows": 6,  # compacted, as many partitions as commands (docs/durable-follows.md)
}
TOPIC_CONFIGS = {"batch-cancel.follows": {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}}
EMULATOR_PORT = 8090
DEV_KEY = "sk-emulator"
HERE = Path(__file__).resolve().parent


def _pipe(prefix: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"[{prefix}] {line.decode(errors='replace')}")
        sys.stdout.flush()


def _spawn(prefix: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl
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
#: Every dialect providers.dev.yaml configures (a provider named after its dialect).
DEV_DIALECTS = (
    "openai", "siliconflow", "dashscope", "deepinfra", "anthropic", "mistral", "azure", "together", "xai"
)  # fmt: skip


def _preload_demo_batches() -> None:
    """A few batches in every dialect, so the README's first ``batch-cancel publish`` has something to stop."""
    for dialect in DEV_DIALECTS:
        for batch_id in DEMO_BATCHES:
            body = json.dumps({"dialect": dialect, "id": batch_id, "scenario": {"cancelling_polls": 3}}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{EMULATOR_PORT}/_admin/batches",
                data=body,
                headers={"content-type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - loopback, fixed URL
    print(f"[stack] emulator has batches {', '.join(DEMO_BATCHES)} in every dialect", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--kafka-port", type=int, default=9092, help="broker port on 127.0.0.1 (default 9092)")
    parser.add_argument("--no-worker", action="store_true", help="start broker and emulator only")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    broker = KafkaBroker(port=args.kafka_port)
    children: list[subprocess.Popen[bytes]] = []
    print(f"[stack] starting Kafka broker on {broker.bootstrap_servers} (data in {broker.data_dir})", flush=True)
    try:
        broker.start()
        for topic, partitions in DEV_TOPICS.items():
            broker.create_topic(topic, partitions, TOPIC_CONFIGS.get(topic))
        print(f"[stack] Kafka {broker.version()} ready; topics: {', '.join(DEV_TOPICS)}", flush=True)
        emulator_args = [sys.executable, "-m", "worker.emulator", "--host", "127.0.0.1", "--port", str(EMULATOR_PORT)]
        children.append(_spawn("emulator", emulator_args))
        _wait_port(EMULATOR_PORT)
        _preload_demo_batches()
        if not args.no_worker:
            env = {
                **os.environ,
                "BCW_FOLLOW_INITIAL_INTERVAL_S": "0.5",
                "BCW_FOLLOW_MAX_INTERVAL_S": "5",
                "BCW_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "BCW_PROVIDERS_FILE": str(HERE / "providers.dev.yaml"),
                "BCW_LOG_FORMAT": "console",
                "BCW_METRICS_HOST": "127.0.0.1",
                **{f"DEV_{d.upper()}_API_KEY": DEV_KEY for d in DEV_DIALECTS},
            }
            children.append(_spawn("worker", [sys.executable, "-m", "worker", "run"], env))
        print("[stack] up: emulator http://127.0.0.1:8090, metrics http://127.0.0.1:9464/metrics; Ctrl-C stops all")
        sys.stdout.flush()
        while not stop.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    print(f"[stack] a child exited with {child.returncode}; stopping", flush=True)
                    stop.set()
    finally:
        print("[stack] stopping", flush=True)
        for child in reversed(children):
            _stop(child)
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
