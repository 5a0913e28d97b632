"""A real, single-node Apache Kafka broker for tests and the dev stack, started from Maven Central jars.

Why not a fake: consumer groups, rebalances, offset commits and idempotent producers are exactly where a
Kafka consumer goes wrong, and only the real broker behaves like production. No Docker engine exists on
our machines, so the broker runs as a plain Java 17 process from Apache Kafka's own jars, resolved once
by Maven into a git-ignored cache (``.cache/kafka-<version>/libs``).

The broker is a combined KRaft broker+controller on free loopback ports with a fresh data directory.
It can be stopped (SIGTERM), killed (SIGKILL) and restarted on the same ports and data: the
reliability tests need all three. The Java process is bound to its parent with ``PR_SET_PDEATHSIG``,
so even a SIGKILLed test run leaves no broker behind.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "KafkaBroker",
    "ensure_jars",
    "ensure_tools_jar",
    "free_port",
    "spawn",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
POM = Path(__file__).resolve().parent / "pom.xml"
#: Keep in step with ``kafka.version`` in ``devstack/pom.xml``.
KAFKA_VERSION = "4.1.1"
DEFAULT_CACHE = Path(os.environ.get("BCW_CACHE_DIR", REPO_ROOT / ".cache"))

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c{{1}})%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = org.apache.kafka
logger.kafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class BrokerError(RuntimeError):
    """The broker could not be prepared, started or reached; the message carries the log tail."""


#: Ports this process has handed out: never twice, so two listeners picked before either binds cannot collide.
_HANDED_OUT: set[int] = set()
_LOWEST_PORT = 20000


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections (Linux's default when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nobody listened on a moment ago, below the kernel's ephemeral range.

    The caller binds it later, often in another process (a broker's JVM seconds after), and binds it again
    after a restart. A port from ``bind(0)`` lies in the range the kernel hands to outgoing connections,
    and one of the many connections the harness opens in between can hold it as its local port, which makes
    the later ``listen`` fail even with ``SO_REUSEADDR`` (a node of the three-broker cluster died at start in
    one of nine runs, most likely so). Below that range only another listener can take it.
    """
    floor = _ephemeral_floor()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(_LOWEST_PORT, floor) if floor > _LOWEST_PORT + 1000 else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen = int(s.getsockname()[1])
        _HANDED_OUT.add(chosen)
        return chosen
    raise OSError("no free loopback port below the ephemeral range after 200 tries")


def ensure_jars(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Resolve the broker's classpath with Maven once; later calls return the cached folder at once.

    A file lock makes concurrent callers (a test run beside ``make dev``) wait instead of racing.
    """
    libs = cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".kafka-jars.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return libs
        if shutil.which("mvn") is None:
            raise BrokerError(
                "Maven (mvn) is needed once to fetch Apache Kafka's jars; install it: apt-get install maven"
            )
        tmp = libs.with_name("libs.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                f"mvn could not resolve Kafka {KAFKA_VERSION}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker.write_text(KAFKA_VERSION)
    return libs


def ensure_tools_jar(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Make sure Kafka's admin tools (``kafka-tools``, e.g. ``AclCommand``) are on the broker classpath.

    ``devstack/pom.xml`` lists ``kafka-tools``, so a fresh cache has it. A cache resolved before it was
    added gets the one jar copied in (its dependencies are already there); the folder is only added to,
    never replaced, so brokers being started concurrently from it are not disturbed.
    """
    libs = ensure_jars(cache_dir)
    jar = libs / f"kafka-tools-{KAFKA_VERSION}.jar"
    if jar.exists():
        return jar
    with open(cache_dir / ".kafka-jars.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jar.exists():
            return jar
        tmp = Path(tempfile.mkdtemp(prefix="bcw-kafka-tools-"))
        try:
            cmd = [
                "mvn", "-q", "-B", "-f", str(POM), "dependency:copy",
                f"-Dartifact=org.apache.kafka:kafka-tools:{KAFKA_VERSION}", f"-DoutputDirectory={tmp}",
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not (tmp / jar.name).exists():
                raise BrokerError(f"mvn could not fetch kafka-tools {KAFKA_VERSION}:\n{proc.stdout[-3000:]}")
            shutil.move(str(tmp / jar.name), jar)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return jar


def _die_with_parent() -> None:
    """Runs in a child before exec (``preexec_fn``): SIGKILL the child when the thread that forked it ends."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


#: The one thread every child is forked from; it ends only when this process does.
_SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="bcw-spawner")


def spawn(args: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **options)`` for a child that dies with this process, even a SIGKILLed one.

    The kernel's parent-death signal (``PR_SET_PDEATHSIG``) fires when the *thread* that forked the child
    ends, not the process. A broker restarted from ``asyncio.to_thread`` was SIGKILLed when that test's event
    loop closed its executor, and the next cluster scenario lost a second controller voter to it (issue 29,
    scenario b: no quorum left). So every child is forked by one thread that lives as long as the process.
    """
    argv = list(args)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, preexec_fn=_die_with_parent, **options)  # noqa: PLW1509 - only prctl

    return _SPAWNER.submit(start).result()


_LIVE: set[KafkaBroker] = set()


@atexit.register
def _kill_leftovers() -> None:
    for broker in list(_LIVE):
        broker.kill()


@dataclass(eq=False)
class KafkaBroker:
    """One broker process and its data directory.

    ``extra_config`` adds or overrides ``server.properties`` lines (the security tests add listeners).
    ``bootstrap_servers`` is always the PLAINTEXT listener, which the harness itself (readiness probe,
    ``create_topic``) uses; a secured broker keeps it on loopback for its super user.
    """

    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bcw-kafka-")))
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap: str = "512m"
    extra_config: dict[str, str] = field(default_factory=dict)
    cache_dir: Path = DEFAULT_CACHE
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _formatted: bool = field(default=False, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """How the process ended when it ended by itself (None while it runs, or after ``kill``/``stop``)."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _config(self) -> dict[str, str]:
        b, c = self.port, self.controller_port
        cfg = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{c}",
            "listeners": f"PLAINTEXT://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # Room for the oversized-command tests: a 2 MB command must reach the worker to be dead-lettered.
            "message.max.bytes": str(4 * 1024 * 1024),
        }
        cfg.update(self.extra_config)
        return cfg

    def _java(self, main: str, *args: str) -> list[str]:
        libs = ensure_jars(self.cache_dir)
        return [
            "java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", f"{libs}/*", main, *args,
        ]  # fmt: skip

    def _write_files(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self._config().items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file))
        return props

    def _format_args(self) -> list[str]:
        """How storage is formatted: ``--standalone``, a one-voter quorum from the controller listener, under a
        fresh cluster id (``devstack.cluster`` formats its nodes into one three-voter quorum instead)."""
        return ["--standalone", "-t", uuid.uuid4().hex[:22]]

    def format(self, extra_args: Sequence[str] = ()) -> None:
        """Format KRaft storage once."""
        props = self._write_files()
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "--ignore-formatted", *self._format_args(),
            "-c", str(props), *extra_args,
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(f"kafka StorageTool format failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        self._formatted = True

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker (formatting on first start) and return once a metadata round trip succeeds."""
        if self.running:
            return
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it (a cluster's nodes are only ready once a quorum runs)."""
        if self.running:
            return
        if not self._formatted:
            self.format()
        props = self._write_files()
        out = open(self.data_dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child, closed in _reap
        self._proc = spawn(
            self._java("kafka.Kafka", str(props)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: a Ctrl-C in the terminal must not kill the broker before the worker drains.
            start_new_session=True,
        )
        out.close()
        _LIVE.add(self)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no attempt yet"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"broker exited with code {self._proc.returncode}\n{self.log_tail()}")
            try:
                # A plain TCP connect first keeps aiokafka from logging a refused connection per probe.
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                _run_async(_metadata_round_trip(self.bootstrap_servers))
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise BrokerError(f"broker not ready after {timeout:.0f}s (last probe: {last_error})\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown (SIGTERM), as an orchestrator would; SIGKILL if it hangs."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reap()

    def kill(self) -> None:
        """Crash the broker: SIGKILL, no flush, no controlled shutdown."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._reap()

    def restart(self, *, hard: bool = False, timeout: float = 90.0) -> None:
        """Stop (or kill) and start again on the same ports and data directory."""
        self.kill() if hard else self.stop()
        self.start(timeout)

    def _reap(self) -> None:
        self._proc = None
        _LIVE.discard(self)

    def close(self) -> None:
        """Stop the broker and remove its data directory."""
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        chunks = []
        for f in (self.data_dir / "stdout.log", self.log_file):
            if f.exists():
                tail = f.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {f.name} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        return "\n".join(chunks) or "(no broker log written)"

    def version(self) -> str | None:
        """The version the broker itself logged at start (proof that a real Kafka ran)."""
        if not self.log_file.exists():
            return None
        for line in self.log_file.read_text(errors="replace").splitlines():
            if "Kafka version:" in line:
                return line.split("Kafka version:", 1)[1].split()[0]
        return None

    def run_tool(self, main: str, *args: str, timeout: float = 180.0) -> str:
        """Run one of Kafka's Java command-line tools (e.g. ``org.apache.kafka.tools.AclCommand``).

        Uses the broker's own classpath plus ``kafka-tools``; returns stdout, raises ``BrokerError`` with
        the output when the tool fails, because a silently missing ACL would make a test lie.
        """
        ensure_tools_jar(self.cache_dir)
        self._write_files()
        cmd = self._java(main, *args)
        cmd[1:3] = ["-Xmx256m", "-Xms64m"]  # a client tool, not a broker: keep the heap small
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
        if proc.returncode != 0:
            raise BrokerError(f"{main} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return proc.stdout

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
        _run_async(_create_topic(self.bootstrap_servers, name, partitions, config or {}))

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion on a private loop, so sync callers work inside or outside a loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _metadata_round_trip(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        await asyncio.wait_for(admin.describe_cluster(), 5)
    finally:
        await admin.close()


async def _create_topic(bootstrap: str, name: str, partitions: int, config: dict[str, str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = await admin.describe_topics([name])
            parts = described[0].get("partitions", []) if described else []
            if len(parts) == partitions and all(p.get("leader", -1) >= 0 for p in parts):
                return
            await asyncio.sleep(0.1)
        raise BrokerError(f"topic {name} has no leaders after 30s")
    finally:
        await admin.close()
