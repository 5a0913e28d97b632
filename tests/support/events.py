"""Read what the worker published: state events by command, dead letters, committed offsets."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.waiting import until
from worker.contract import batch_key

__all__ = ["EventLog", "Published", "committed_vs_end", "publish_commands"]


@dataclass
class Published:
    value: dict[str, Any]
    raw: bytes | None
    headers: dict[str, bytes]
    key: bytes | None
    partition: int
    offset: int


@dataclass
class EventLog:
    """Tails a topic from the beginning and indexes events by ``command_id``."""

    bootstrap: str
    topic: str
    records: list[Published] = field(default_factory=list)
    by_command: dict[str, list[Published]] = field(default_factory=lambda: defaultdict(list))
    _consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> EventLog:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def poll(self) -> None:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=100)
        for records in batch.values():
            for r in records:
                try:
                    value = json.loads(r.value) if r.value else {}
                except (ValueError, RecursionError):
                    value = {"_raw": r.value}
                p = Published(value, r.value, dict(r.headers), r.key, r.partition, r.offset)
                self.records.append(p)
                if isinstance(value, dict) and "command_id" in value:
                    self.by_command[value["command_id"]].append(p)

    def finals(self, command_id: str) -> list[dict[str, Any]]:
        """Final events for a command after de-duplication by ``event_id``."""
        seen: dict[str, dict[str, Any]] = {}
        for p in self.by_command.get(command_id, []):
            if p.value.get("final"):
                seen.setdefault(p.value["event_id"], p.value)
        return list(seen.values())

    async def wait_until(self, predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
        """``until``, reading more events between two checks."""
        await until(predicate, timeout, what, step=self.poll)

    async def wait_finals(self, command_ids: Iterable[str], timeout: float = 60.0) -> None:
        ids = list(command_ids)
        await self.wait_until(
            lambda: all(self.finals(c) for c in ids),
            timeout,
            what=f"final events of {sum(1 for c in ids if not self.finals(c))} of {len(ids)} commands",
        )


async def publish_commands(
    bootstrap: str,
    topic: str,
    commands: Iterable[dict[str, Any] | bytes],
    headers: list[tuple[str, bytes]] | None = None,
) -> list[str]:
    """Publish commands (dicts get a ``command_id`` if missing and the recommended key); returns the ids."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    ids: list[str] = []
    try:
        futures = []
        for c in commands:
            if isinstance(c, bytes):
                futures.append(await producer.send(topic, c, headers=headers or []))
                continue
            cmd = {"command_id": str(uuid.uuid4()), **c}
            ids.append(cmd["command_id"])
            key = batch_key(
                str(cmd.get("provider")), str(cmd.get("account", "default")), str(cmd.get("batch_id"))
            ).encode()
            futures.append(await producer.send(topic, json.dumps(cmd).encode(), key=key, headers=headers or []))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ids


async def committed_vs_end(bootstrap: str, topic: str, group: str) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offset and the log-end offset of every partition of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        committed_raw = await admin.list_consumer_group_offsets(group)
        committed = {tp.partition: meta.offset for tp, meta in committed_raw.items() if tp.topic == topic}
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps)
        return committed, {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()
        await admin.close()
