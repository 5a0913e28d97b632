"""Child processes bound to ours, and the worker run as one: the one wrapper the tests and the benchmarks share.

Separate processes are what the worker's promises are about (SIGKILL mid-follow, SIGTERM drain, several
members in one group), so neither the end-to-end tests nor the benchmarks run the worker inside their own
event loop. Every child dies with the process that started it (``die_with_parent``), writes to a log file
that failures quote, and a worker is ready when its ``/readyz`` says so, never after a guessed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from devstack.broker import free_port, spawn

__all__ = ["ChildProcess", "WorkerProcess"]


class ChildProcess:
    """``argv`` in its own process once ``spawn`` is called, its output appended to ``log_path``."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, *, name: str, cwd: Path | None = None
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.name = name
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> Self:
        with open(self.log_path, "ab") as log:
            self.proc = spawn(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never spawned"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        """The exit code; a child still running after ``timeout`` is killed and reported with its log."""
        assert self.proc is not None, f"{self.name} was never spawned"
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} did not finish within {timeout:.0f}s:\n{self.log_tail()}") from None

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the graceful path; returns the exit code (raises if it does not exit in time)."""
        assert self.proc is not None, f"{self.name} was never spawned"
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it takes longer than ``timeout``; nothing when it is not running."""
        if self.alive():
            try:
                self.terminate(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log records with this ``event`` field (``BCW_LOG_FORMAT=json``), in order: what tests and
        benchmarks read of a worker's log, so that rewording a message breaks nothing."""
        found = []
        for line in self.log_text().splitlines():
            if f'"event": "{event}"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class WorkerProcess(ChildProcess):
    """``python -m worker run`` (or another entry ``module``) configured by ``BCW_`` variables in ``env``.

    Each one gets its own metrics port on 127.0.0.1 (``port``) and JSON logs unless ``env`` says otherwise.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        name: str = "worker",
        *,
        log_path: Path | None = None,
        module: str = "worker",
        args: Sequence[str] = ("run",),
        cwd: Path | None = None,
    ) -> None:
        self.port = free_port()
        full_env = {**os.environ, **env, "BCW_METRICS_PORT": str(self.port), "BCW_METRICS_HOST": "127.0.0.1"}
        full_env.setdefault("BCW_LOG_FORMAT", "json")
        if log_path is None:
            log_path = Path(tempfile.mkstemp(prefix=f"bcw-{name}-", suffix=".log")[1])
        super().__init__([sys.executable, "-m", module, *args], full_env, log_path, name=name, cwd=cwd)

    def start(self, ready_timeout: float = 60.0) -> Self:
        """Spawn and wait until ready."""
        self.spawn()
        self.wait_ready(ready_timeout)
        return self

    def get(self, path: str) -> tuple[int, str]:
        """``GET`` on the worker's health/metrics port: (status, body); raises ``OSError`` when nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def ready(self) -> bool:
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once ``/readyz`` answers 200; raise with the log's tail if the worker exits or is not in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
