"""``make dev`` as README describes it: the stack comes up, and ``batch-cancel publish --wait`` of a demo batch ends
cancelled in every dialect providers.dev.yaml configures, the cloud ones (Gemini API, Vertex AI with a throw-away
service-account key, Bedrock with test AWS keys) against the emulator's own credential endpoints included.

The stack runs on free ports (``--kafka-port``, ``--emulator-port``, ``--metrics-port``) so it never meets a
developer's own ``make dev`` or another session on the machine; Ctrl-C's SIGTERM ends it with exit 0.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from devstack.broker import free_port, spawn
from devstack.stack import CLOUD_DEMO_BATCHES, DEMO_BATCHES, HERE
from worker.config import load_providers

pytestmark = pytest.mark.timeout(600)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return int(answer.status) == 200
    except OSError:
        return False


def test_make_dev_cancels_a_demo_batch_in_every_dialect(tmp_path: Path) -> None:
    kafka_port, emulator_port, metrics_port = free_port(), free_port(), free_port()
    log_path = tmp_path / "devstack.log"
    argv = [sys.executable, "-m", "devstack", "--kafka-port", str(kafka_port)]
    argv += ["--emulator-port", str(emulator_port), "--metrics-port", str(metrics_port)]
    with open(log_path, "wb") as log:
        stack = spawn(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 240
        while not _ready(metrics_port):
            assert stack.poll() is None, f"make dev exited with {stack.returncode}:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"make dev's worker not ready:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.5)
        providers = load_providers(HERE / "providers.dev.yaml").providers
        assert {"gemini", "vertex", "bedrock"} <= {p.dialect for p in providers.values()}
        publish = [str(Path(sys.executable).parent / "batch-cancel"), "publish"]
        publish += ["--bootstrap-servers", f"127.0.0.1:{kafka_port}", "--wait", "--timeout", "120"]
        runs = {
            name: subprocess.Popen(
                [*publish, "--provider", name, "--batch-id", CLOUD_DEMO_BATCHES.get(p.dialect, DEMO_BATCHES)[0]],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for name, p in providers.items()
        }
        results = {name: (run.wait(180), run.communicate()[0]) for name, run in runs.items()}
        failed = {name: out for name, (rc, out) in results.items() if rc != 0}
        assert not failed, f"{failed}\n{log_path.read_text()[-4000:]}"
        for name, (_, out) in results.items():
            assert "cancelled" in out, (name, out)
        stack.send_signal(signal.SIGTERM)  # what Ctrl-C does
        assert stack.wait(90) == 0, log_path.read_text()[-4000:]
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait(30)
    text = log_path.read_text()
    assert "PRIVATE KEY" not in text  # the throw-away key stays in its file


def test_free_ports_are_distinct_and_below_the_range_outgoing_connections_use() -> None:
    """A port handed out is bound later, often by another process: one from the kernel's ephemeral range can
    meanwhile be held as an outgoing connection's local port, and then the listener cannot bind it."""
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(p < floor for p in ports), sorted(p for p in ports if p >= floor)[:5]


def test_a_child_outlives_the_thread_that_started_it() -> None:
    """The parent-death signal follows the forking *thread*: a broker restarted from ``asyncio.to_thread`` died
    when that test's loop closed its executor, and the next cluster scenario had lost a voter. ``spawn`` forks
    from one thread that lives as long as the process."""
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(spawn(["sleep", "60"])))
    thread.start()
    thread.join()
    (child,) = started
    try:
        task = Path(f"/proc/self/task/{thread.native_id}")
        deadline = time.monotonic() + 10
        while task.exists() and time.monotonic() < deadline:  # the OS thread is gone: its signal would be sent
            time.sleep(0.01)
        assert not task.exists()
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=1)
    finally:
        child.kill()
        child.wait()
