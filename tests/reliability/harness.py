"""Helpers the scenarios share: publishing with partition/offset metadata, waiting on commits, worker logs."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from batch_cancel_emulator.testing import DEFAULT_KEY
from devstack.worker_process import WorkerProcess
from tests.reliability.checker import Row, check
from tests.support.events import EventLog
from tests.support.stack import Stack, wait_committed
from worker.contract import batch_key

__all__ = [
    "Sent",
    "VariantWorker",
    "accepted",
    "alive",
    "assignments",
    "cancel_posts",
    "command",
    "conclude",
    "deliveries",
    "finished",
    "ids_of",
    "log_lines",
    "publish",
    "publish_commands",
    "revocations",
    "wait_committed",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sent:
    """One record the broker acknowledged."""

    command_id: str | None
    value: bytes | None
    partition: int
    offset: int
    headers: tuple[tuple[str, bytes], ...] = ()


def command(provider: str, batch_id: str, **fields: Any) -> tuple[str, bytes, bytes]:
    """A valid command: its id, its value and the recommended key."""
    cid = f"rel-{uuid.uuid4()}"
    body = {"command_id": cid, "provider": provider, "batch_id": batch_id, **fields}
    key = batch_key(provider, fields.get("account", "default"), batch_id).encode()
    return cid, json.dumps(body).encode(), key


async def publish(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[str | None, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
) -> list[Sent]:
    """Publish ``(command_id, value, key, headers)`` records; returns what the broker acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_request_size=4 << 20
    )
    await producer.start()
    try:
        pending = []
        for cid, value, key, headers in records:
            fut = await producer.send(topic, value, key=key, headers=list(headers))
            pending.append((cid, value, tuple(headers), fut))
        out = []
        for cid, value, headers, fut in pending:
            meta = await fut
            out.append(Sent(cid, value, meta.partition, meta.offset, headers))
        return out
    finally:
        await producer.stop()


def accepted(events: EventLog, ids: Iterable[str]) -> Callable[[], bool]:
    """A predicate: every command has at least one event (its cancel was accepted and reported)."""
    frozen = list(ids)
    return lambda: all(events.by_command.get(c) for c in frozen)


def finished(events: EventLog, ids: Iterable[str]) -> Callable[[], bool]:
    """A predicate: every command has its final event."""
    frozen = list(ids)
    return lambda: all(events.finals(c) for c in frozen)


def ids_of(sent: Iterable[Sent]) -> list[str]:
    return [x.command_id for x in sent if x.command_id is not None]


async def publish_commands(stack: Stack, commands: Iterable[tuple[str, bytes, bytes]]) -> list[Sent]:
    return await publish(stack.bootstrap, stack.commands, ((c, v, k, ()) for c, v, k in commands))


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str, log: EventLog | None = None) -> float:
    """Poll ``log`` (if given) until ``predicate``; returns the seconds it took. Bounded by ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        if log is not None:
            await log.poll()
        else:
            await asyncio.sleep(0.1)
    return time.monotonic() - start


def alive(workers: Iterable[WorkerProcess]) -> list[str]:
    """Names of workers that died on their own (the worker must never need a manual restart)."""
    return [str(w.log_path) for w in workers if w.proc is None or w.proc.poll() is not None]


def log_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's JSON log lines (non-JSON lines come back as ``{"message": line}``)."""
    out = []
    for line in worker.log_text().splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            value = {"message": line}
        out.append(value if isinstance(value, dict) else {"message": line})
    return out


class VariantWorker(WorkerProcess):
    """A worker process started from another entry module (a test-only variant of the real worker)."""

    def __init__(self, env: dict[str, str], module: str, name: str = "variant") -> None:
        super().__init__(env, name=name, module=module, args=(), cwd=REPO_ROOT)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), self.env.get("PYTHONPATH")]))


def assignments(worker: WorkerProcess) -> list[list[int]]:
    """Every assignment the worker logged, in order (one delivery of the partitions' uncommitted records)."""
    return [list(record["partitions"]) for record in worker.log_events("partitions_assigned")]


def revocations(worker: WorkerProcess) -> int:
    """Rebalances that took partitions away (a first join logs an empty revocation; it is not counted)."""
    return sum(1 for record in worker.log_events("partitions_revoked") if record["partitions"])


def deliveries(workers: Iterable[WorkerProcess]) -> Counter[int]:
    """Upper bound on how often each partition's uncommitted records were delivered: one per assignment."""
    counts: Counter[int] = Counter()
    for w in workers:
        for parts in assignments(w):
            counts.update(parts)
    return counts


def cancel_posts(stack: Stack, dialect: str, batches: Iterable[str]) -> Counter[str]:
    """POSTs per batch the emulator received (every answer, retries included)."""
    wanted = set(batches)
    return Counter(
        r["batch_id"]
        for r in stack.emulator.requests(dialect=dialect)
        if r["method"] == "POST" and r["batch_id"] in wanted
    )


def conclude(
    name: str,
    stack: Stack,
    events: EventLog,
    sent: Iterable[str | None],
    started: float,
    *,
    committed: tuple[dict[int, int], dict[int, int]],
    dlq: EventLog | None = None,
    dead_letters: Iterable[bytes | None] = (),
    notes: str = "",
) -> Row:
    return check(
        name,
        sent=[c for c in sent if c is not None],
        events=events,
        started=started,
        committed=committed[0],
        ends=committed[1],
        dlq=dlq,
        dead_letters=dead_letters,
        secrets=[DEFAULT_KEY],
        logs=[w.log_text() for w in stack.workers],
        notes=notes,
    )
