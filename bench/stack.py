"""The benchmark's own stack: a private broker, fresh topics, worker processes, a publisher and an observer.

Nothing here depends on the test suite's fixtures. Every wait has a deadline and every loop a bound, so a
stuck worker ends a benchmark with an error instead of hanging the machine other engineers share.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from batch_cancel_emulator.testing import DEFAULT_KEY, Emulator
from devstack.topics import WorkerTopics
from devstack.worker_process import ChildProcess, WorkerProcess
from worker.contract import batch_key
from worker.kafka.connection import stop_client

__all__ = [
    "CLK_TCK",
    "Observer",
    "Proc",
    "Topics",
    "WorkerProc",
    "command_bytes",
    "cpu_seconds",
    "load_average",
    "peak_rss_mb",
    "publish_bulk",
    "publish_paced",
    "rss_mb",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROVIDER = "openai"


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from ``/proc/PID/stat`` (fields 14 and 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kb(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    """``VmHWM``: the highest resident set size the process ever had."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def command_bytes(batch_id: str) -> tuple[str, bytes, bytes]:
    """``(command_id, value, key)`` of one cancel command for the emulator's OpenAI dialect."""
    command_id = str(uuid.uuid4())
    value = json.dumps({"command_id": command_id, "provider": PROVIDER, "batch_id": batch_id}).encode()
    return command_id, value, batch_key(PROVIDER, "default", batch_id).encode()


@dataclass
class Topics(WorkerTopics):
    """Fresh commands/events/dlq/follows topics and a group name on the private broker."""

    partitions: int = 6
    prefix: str = "bench-"


class Proc(ChildProcess):
    """A child process bound to our lifetime, started at once, with its CPU reading."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str, log_dir: Path) -> None:
        super().__init__(argv, env, log_dir / f"{name}.log", name=name)
        self.spawn()

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


class WorkerProc(WorkerProcess):
    """``python -m worker run`` as production runs it, against the benchmark's topics and emulator.

    ``push_secret``: the account pushes (docs/push.md), its deliveries signed with this secret (passed to the
    process as ``BENCH_PUSH_SECRET``), routine polls every ``push_poll_interval_s`` as the safety net, signals
    on ``topics.signals_topic``. ``command="webhooks"`` runs the receiver instead of the worker, from the same
    providers file and settings, as deployed. (Every option is a string: the rest of ``env`` is.)
    """

    def __init__(
        self,
        topics: Topics,
        emulator: Emulator,
        log_dir: Path,
        name: str = "worker",
        *,
        budget: str = "100000",
        push_secret: str = "",
        push_poll_interval_s: str = "300",
        command: str = "run",
        **env: str,
    ) -> None:
        account = "{ api_key_env: BENCH_KEY }"
        if push_secret:
            account = (
                "{ api_key_env: BENCH_KEY, "
                f"push: {{ secrets_env: [BENCH_PUSH_SECRET], poll_interval_s: {push_poll_interval_s} }} }}"
            )
        full_name = f"{name}-{topics.tag}"
        providers = log_dir / f"providers-{full_name}.yaml"
        providers.write_text(
            "providers:\n"
            f"  {PROVIDER}:\n"
            f"    dialect: {PROVIDER}\n"
            f"    base_url: {emulator.base_url(PROVIDER)}\n"
            f"    max_requests_per_s: {budget}\n"
            "    accounts:\n"
            f"      default: {account}\n"
        )
        worker_env = {
            "BCW_KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap,
            "BCW_COMMANDS_TOPIC": topics.commands,
            "BCW_EVENTS_TOPIC": topics.events,
            "BCW_DLQ_TOPIC": topics.dlq,
            "BCW_FOLLOWS_TOPIC": topics.follows,
            "BCW_GROUP_ID": topics.group,
            "BCW_PROVIDERS_FILE": str(providers),
            "BENCH_KEY": DEFAULT_KEY,
            **({"BCW_SIGNALS_TOPIC": topics.signals_topic, "BENCH_PUSH_SECRET": push_secret} if push_secret else {}),
            **env,
        }
        super().__init__(worker_env, full_name, log_path=log_dir / f"{full_name}.log", args=(command,))
        self.spawn()

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


class Observer:
    """Tails the events topic; records when each command's final event was seen (and its CreateTime).

    Reads only the CloudEvents headers (``ce_commandid``, ``ce_outcome`` on final events), never the JSON
    value, so the observer costs as little CPU as possible on a machine the worker shares.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=50,
        )
        self.final_seen: dict[str, float] = {}  # command_id -> wall time the observer read it
        self.final_created: dict[str, float] = {}  # command_id -> the record's CreateTime (the worker's send)
        self.outcomes: dict[str, str] = {}
        self.events = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batch.values():
                self.events += len(records)
                for r in records:
                    headers = dict(r.headers)
                    outcome = headers.get("ce_outcome")
                    if outcome is None:
                        continue
                    cid = headers["ce_commandid"].decode()
                    if cid not in self.final_seen:
                        self.final_seen[cid] = now
                        self.final_created[cid] = r.timestamp / 1000
                        self.outcomes[cid] = outcome.decode()

    async def wait_finals(self, ids: set[str], timeout: float) -> bool:
        """True once every command in ``ids`` has a final event; False at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._task is not None and self._task.done():
                self._task.result()  # re-raise what stopped the observer
            if len(ids - self.final_seen.keys()) == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        await stop_client(self._consumer, "events observer")  # a broker swamped by the overload run: aiokafka#647


def _producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=linger_ms)


async def publish_bulk(
    bootstrap: str, topic: str, batch_ids: list[str], batch_of: dict[str, str] | None = None
) -> tuple[dict[str, float], float]:
    """Publish one command per batch as fast as the client allows; returns ``{command_id: t}`` and t_first.
    ``batch_of``, when given, is filled with ``{command_id: batch_id}``."""
    producer = _producer(bootstrap, linger_ms=5)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        futures = []
        t_first = time.time()
        for batch_id in batch_ids:
            cid, value, key = command_bytes(batch_id)
            sent[cid] = time.time()
            if batch_of is not None:
                batch_of[cid] = batch_id
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent, t_first


async def publish_paced(
    bootstrap: str, topic: str, batch_ids: list[str], rate: float
) -> tuple[dict[str, float], dict[str, str], float]:
    """Publish at ``rate`` per second (no batching delay); returns times by command, batch by command, rate."""
    producer = _producer(bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    batch_of: dict[str, str] = {}
    try:
        futures = []
        t0 = time.monotonic()
        for i, batch_id in enumerate(batch_ids):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            cid, value, key = command_bytes(batch_id)
            sent[cid] = time.time()
            batch_of[cid] = batch_id
            futures.append(await producer.send(topic, value, key=key))
        achieved = len(batch_ids) / max(time.monotonic() - t0, 1e-9)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent, batch_of, achieved


def make_log_dir(root: Path | None) -> Path:
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        return root
    return Path(tempfile.mkdtemp(prefix="bcw-bench-"))
