"""The follow-state topic: where live follows are kept, and read back when a partition changes owner.

Layout. Compacted, with exactly as many partitions as the commands topic; a follow's record goes to the
*same partition number* as the command it came from (never re-hashed: a Go or Node publisher partitions
keys differently from aiokafka), so the owner of commands partition p is the owner of follows partition p.
Key: the batch key; value: ``FollowState`` JSON; a tombstone (null value) when the follow ends.

Reading. On assignment the consumer reads each new partition from its beginning to the end offset it had
when the read began, the latest record per key winning, before it takes in any new command of that
partition. Compaction keeps that read short; records written while reading belong to the new owner itself.

Both topics are checked at start (``check_topics``): a follows topic that is missing, not compacted or has a
different partition count would silently lose follows on the first move, so the worker refuses to start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, KafkaTimeoutError
from pydantic import ValidationError

from worker.config import ConfigError, KafkaConnection, Settings
from worker.contract import FollowState, KillState, decode_kept, encode_follow_state, encode_kill_state
from worker.kafka.connection import client_kwargs, stop_client
from worker.kafka.producer import EventProducer
from worker.retry import retry_until_done
from worker.telemetry import metrics

__all__ = ["FollowStore", "check_topics", "read_follows"]

T = TypeVar("T")

log = logging.getLogger("worker.kafka.follow_store")


class FollowStore:
    """Writes follow states through the worker's one idempotent, ``acks=all`` producer; reads them back."""

    def __init__(self, settings: Settings, producer: EventProducer) -> None:
        self._settings = settings
        self._producer = producer
        self.topic = settings.follows_topic

    async def write(self, partition: int, key: str, state: FollowState | None) -> None:
        """Returns once every in-sync replica has it; retried (by the producer) until then or cancelled."""
        value = None if state is None else encode_follow_state(state)
        await self._producer.put(self.topic, partition, key.encode(), value)
        metrics.FOLLOW_STATE_WRITES.labels("tombstone" if state is None else "state").inc()

    async def write_kill(self, partition: int, key: str, state: KillState | None) -> None:
        """A standing kill's record (``None``: tombstone), beside the follows of its partition."""
        value = None if state is None else encode_kill_state(state)
        await self._producer.put(self.topic, partition, key.encode(), value)
        metrics.FOLLOW_STATE_WRITES.labels("tombstone" if state is None else "kill").inc()

    async def read(self, partitions: Iterable[int]) -> dict[int, list[FollowState | KillState]]:
        """The live follows of these partitions, as last written."""
        return await read_follows(self._settings, self.topic, partitions)


async def read_follows(
    settings: KafkaConnection, topic: str, partitions: Iterable[int], *, timeout: float = 120.0
) -> dict[int, list[FollowState | KillState]]:
    """Read partitions of the follows topic to their current end; the latest record per key wins.

    A record this version cannot decode is logged and skipped rather than stopping the partition: the
    follow it describes is lost to this worker, which the log says, but every other follow resumes.
    """
    wanted = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    if not wanted:
        return {}
    reader = AIOKafkaConsumer(
        **client_kwargs(settings), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        reader.assign(wanted)
        ends: dict[TopicPartition, int] = await reader.end_offsets(wanted)
        await reader.seek_to_beginning(*wanted)
        latest: dict[int, dict[bytes, bytes | None]] = {tp.partition: {} for tp in wanted}
        todo = {tp for tp in wanted if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} partitions {sorted(tp.partition for tp in todo)} took too long")
            batch = await reader.getmany(*todo, timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp] and record.key is not None:
                        latest[tp.partition][record.key] = record.value
            for tp in list(todo):
                if await reader.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await stop_client(reader, "follows reader")
    return {partition: _decode(topic, partition, records) for partition, records in latest.items()}


def _decode(topic: str, partition: int, records: dict[bytes, bytes | None]) -> list[FollowState | KillState]:
    states: list[FollowState | KillState] = []
    for key, value in records.items():
        if value is None:
            continue
        try:
            states.append(decode_kept(value))
        except (ValidationError, ValueError) as exc:
            log.error(
                "skipping an unreadable follow-state record %r in %s[%d]: %s",
                key[:200],
                topic,
                partition,
                str(exc).splitlines()[0][:200],
            )
    return states


async def check_topics(settings: Settings, timeout: float = 30.0, *, signals: bool = False) -> None:
    """Refuse to start (``ConfigError``, exit 2) unless the follows topic can keep what it is given, and, with
    ``signals`` (an account's provider pushes), unless the signals topic exists."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        commands, follows = settings.commands_topic, settings.follows_topic
        wanted = [commands, follows, *([settings.signals_topic] if signals else [])]
        described = await _asked("describing topics", lambda: asyncio.wait_for(admin.describe_topics(wanted), timeout))
        counts = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
        if signals and settings.signals_topic not in counts:
            raise ConfigError(
                f"signals topic {settings.signals_topic!r} does not exist, and the providers file configures push: "
                "create it (BCW_SIGNALS_TOPIC; docs/push.md)"
            )
        if follows not in counts:
            raise ConfigError(
                f"follows topic {follows!r} does not exist: create it compacted with as many partitions as "
                f"{commands!r} (BCW_FOLLOWS_TOPIC; docs/durable-follows.md)"
            )
        if commands not in counts:
            raise ConfigError(f"commands topic {commands!r} does not exist (BCW_COMMANDS_TOPIC)")
        if counts[follows] != counts[commands]:
            raise ConfigError(
                f"follows topic {follows!r} has {counts[follows]} partitions but {commands!r} has "
                f"{counts[commands]}: they must be equal (follows of commands partition p live in partition p)"
            )
        policy = await _asked(
            "reading the follows topic's configuration", lambda: _cleanup_policy(admin, follows, timeout)
        )
        if policy is not None and "compact" not in policy.split(","):
            raise ConfigError(
                f"follows topic {follows!r} has cleanup.policy={policy}: it must be compact, or follows are deleted "
                "by retention while batches still cancel"
            )
    finally:
        await admin.close()


async def _asked(what: str, ask: Callable[[], Awaitable[T]]) -> T:
    """``ask()``, asked again while the broker it went to cannot answer.

    The admin client sends each request to a random broker of its metadata: one that has just died (a broker
    restart, a rolling upgrade) is listed until the cluster fences it, and a worker starting then exited 1
    with a connection error though two brokers of three served (found by reliability scenario 29b). An error
    that is not the broker's absence (version, authorization) is raised at once.
    """

    def failed(attempt: int, exc: BaseException, wait_s: float) -> None:
        log.warning("%s failed at start (%s); asking again in %.1fs", what, exc, wait_s)

    return await retry_until_done(ask, retry_if=_broker_away, on_retry=failed, wait_first_s=0.2, wait_max_s=2.0)


def _broker_away(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, TimeoutError, KafkaTimeoutError)) or (
        isinstance(exc, KafkaError) and exc.retriable
    )


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str, timeout: float) -> str | None:
    """The topic's ``cleanup.policy``; ``None`` when the broker will not say (no DESCRIBE_CONFIGS right)."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"cleanup.policy": None})
    responses: list[Any] = await asyncio.wait_for(admin.describe_configs([resource]), timeout)
    for response in responses:
        for error_code, _msg, _type, _name, entries in response.resources:
            if error_code != 0:
                log.warning(
                    "cannot read the configuration of %s (error %d); not checking compaction", topic, error_code
                )
                return None
            for entry in entries:
                if entry[0] == "cleanup.policy":
                    return str(entry[1])
    return None
