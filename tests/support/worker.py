"""Run the worker as a real separate process, the way Kubernetes does, for end-to-end tests.

Separate processes are what the promises are about (SIGKILL mid-follow, SIGTERM drain, three members in
one group), so the tests never run the worker inside the test's own event loop. Each process gets its
own metrics port; readiness is read from ``/readyz``, not guessed with a sleep. Output goes to a log file
shown in assertion messages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.broker import _die_with_parent, free_port

__all__ = ["WorkerProcess"]


class WorkerProcess:
    def __init__(self, env: dict[str, str], name: str = "worker") -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "BCW_METRICS_PORT": str(self.port), "BCW_METRICS_HOST": "127.0.0.1"}
        self.env.setdefault("BCW_LOG_FORMAT", "json")
        self.log_path = Path(tempfile.mkstemp(prefix=f"bcw-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 60.0) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        log.close()
        self.wait_ready(ready_timeout)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the graceful path; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
