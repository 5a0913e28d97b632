"""Toxiproxy, the TCP proxy the reliability tests break the network with, built once from the Go module proxy.

This machine's kernel has no ``netem`` queueing discipline, so ``tc`` can neither delay nor drop packets;
Toxiproxy does it in user space, per connection: latency and jitter, bandwidth limits, resets, black holes
(the ``timeout`` toxic) and cut links (a disabled proxy). It is built with ``go install`` into the
git-ignored cache, like the Kafka jars (``devstack.broker.ensure_jars``), so a fresh CI machine gets it on
first use (~25-50 s, then cached). The HTTP client the tests drive it with is ``tests/support/toxiproxy.py``.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.broker import DEFAULT_CACHE, BrokerError, free_port, spawn

__all__ = ["TOXIPROXY_VERSION", "ToxiproxyServer", "ensure_toxiproxy"]

TOXIPROXY_VERSION = "2.5.0"
_MODULE = f"github.com/Shopify/toxiproxy/v2/cmd/server@v{TOXIPROXY_VERSION}"


def ensure_toxiproxy(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """``go install`` the server once into ``<cache>/toxiproxy-<version>/``; later calls return at once."""
    folder = cache_dir / f"toxiproxy-{TOXIPROXY_VERSION}"
    binary = folder / "server"
    if binary.exists():
        return binary
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".toxiproxy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        if shutil.which("go") is None:
            raise BrokerError(
                "Go is needed once to build toxiproxy for the network tests; install it: apt-get install golang"
            )
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        env = {**os.environ, "GOBIN": str(partial), "GOFLAGS": "-mod=mod"}
        proc = subprocess.run(["go", "install", _MODULE], env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not (partial / "server").exists():
            raise BrokerError(f"go install {_MODULE} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return binary


_LIVE: set[ToxiproxyServer] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        server.stop()


@dataclass(eq=False)
class ToxiproxyServer:
    """The toxiproxy server on a free loopback port; its API is at ``url``. Dies with the process that started it."""

    port: int = field(default_factory=free_port)
    cache_dir: Path = DEFAULT_CACHE
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="bcw-toxiproxy-", suffix=".log")[1]))
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        binary = ensure_toxiproxy(self.cache_dir)
        with open(self.log_path, "ab") as log:
            self._proc = spawn(
                [str(binary), "-host", "127.0.0.1", "-port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"toxiproxy exited with {self._proc.returncode}:\n{self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise BrokerError(f"toxiproxy not listening after {timeout:.0f}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None
        _LIVE.discard(self)

    def __enter__(self) -> ToxiproxyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
