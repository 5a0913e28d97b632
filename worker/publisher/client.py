"""Publish cancel commands and wait for their outcome: the Python publisher's side of ``schemas/README.md``.

Why a client at all, when any Kafka producer can send the JSON: three details are easy to get wrong and
each one loses or corrupts a cancel.

* The command is built with the worker's own model and checked with the worker's own decoder before it
  leaves, so a command the worker would dead-letter (bad ``batch_id``, unknown field, too large) fails here,
  in the publisher's stack trace, instead of as an ``invalid`` event much later.
* The key is ``batch_key(...)``: commands about one batch stay ordered on one partition.
* Waiting starts reading the events topic at offsets fixed *before* the command is sent (or at a
  timestamp), never at "latest" resolved lazily on the first fetch, which can be after the worker already
  answered a fast cancel.

The current OpenTelemetry context travels as ``traceparent`` headers, so the worker's spans join the
publisher's trace.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from worker.contract import BatchStateEvent, CancelCommand, batch_key, decode_command
from worker.contract.topics import COMMANDS_TOPIC, EVENTS_TOPIC
from worker.kafka.connection import stop_client
from worker.signing import sign

__all__ = [
    "DEFAULT_COMMANDS_TOPIC",
    "DEFAULT_EVENTS_TOPIC",
    "CancelPublisher",
    "EventFollower",
    "OutcomeTimeout",
    "build_command",
    "encode_command",
    "parse_event",
    "publish_cancel",
    "publish_cancel_sync",
    "trace_headers",
    "wait_for_outcome",
]

DEFAULT_COMMANDS_TOPIC = COMMANDS_TOPIC
DEFAULT_EVENTS_TOPIC = EVENTS_TOPIC
#: The worker's default ``BCW_MAX_COMMAND_BYTES``; a bigger command would be dead-lettered as ``too_large``.
MAX_COMMAND_BYTES = 64 * 1024
#: ``wait_for_outcome`` without ``since`` looks back this far, covering clock skew and a slow caller.
DEFAULT_LOOKBACK = timedelta(minutes=5)

EventCallback = Callable[[BatchStateEvent], object]
_tracer = trace.get_tracer("batch-cancel-worker.client")


class OutcomeTimeout(TimeoutError):
    """No final event arrived in time; ``last_event`` is the newest state seen for the command, if any."""

    def __init__(self, command_id: str, timeout: float, last_event: BatchStateEvent | None) -> None:
        self.command_id = command_id
        self.last_event = last_event
        status = last_event.status.value if last_event is not None and last_event.status else None
        seen = f"last status {status}" if last_event is not None else "no event seen"
        super().__init__(f"no final event for command {command_id} within {timeout:g}s ({seen})")


def build_command(
    provider: str, batch_id: str, *, account: str = "default", reason: str | None = None, **fields: Any
) -> CancelCommand:
    """A validated command; ``command_id`` defaults to a fresh UUID and ``requested_at`` to now.

    Raises ``pydantic.ValidationError`` (a ``ValueError``) for anything the contract forbids, unknown
    fields included: a typo such as ``folow=False`` must not silently turn into a followed cancel.
    """
    body: dict[str, Any] = {
        "command_id": str(uuid.uuid4()),
        "requested_at": datetime.now(UTC),
        **fields,
        "provider": provider,
        "account": account,
        "batch_id": batch_id,
    }
    if reason is not None:
        body["reason"] = reason
    return CancelCommand.model_validate(body)


def encode_command(command: CancelCommand, *, max_bytes: int = MAX_COMMAND_BYTES) -> bytes:
    """Compact JSON, re-read with the worker's strict decoder so what is sent is exactly what it accepts."""
    value = command.model_dump_json(exclude_none=True, exclude_defaults=False).encode()
    decode_command(value, max_bytes=max_bytes)  # raises InvalidCommand, the worker's own verdict
    return value


def trace_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """W3C trace context (``traceparent``, ``tracestate``) as Kafka headers; empty when no span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return [(name, value.encode()) for name, value in carrier.items()]


async def publish_cancel(
    bootstrap_servers: str,
    provider: str,
    batch_id: str,
    *,
    account: str = "default",
    reason: str | None = None,
    topic: str = DEFAULT_COMMANDS_TOPIC,
    producer: AIOKafkaProducer | None = None,
    kafka_options: Mapping[str, Any] | None = None,
    signing_key: bytes | None = None,
    **fields: Any,
) -> str:
    """Send one cancel command and return its ``command_id`` once the broker has acknowledged it.

    A convenience over ``CancelPublisher``: pass a started ``producer`` to publish over a connection you
    own; otherwise a ``CancelPublisher`` is opened and closed around this one send, with ``kafka_options``
    (e.g. ``worker.kafka.connection.security_kwargs(KafkaConnection())`` for SASL/TLS). With ``signing_key``
    the command is signed for accounts that require it (``requested_at`` is set to now when absent, because
    signed commands must carry it). The command is validated before any connection is made.
    """
    command, value = _prepared(
        provider, batch_id, account=account, reason=reason, signing_key=signing_key, fields=fields
    )
    if producer is not None:
        await _send(producer, topic, command, value, signing_key)
        return command.command_id
    async with CancelPublisher(
        bootstrap_servers, topic=topic, kafka_options=kafka_options, signing_key=signing_key
    ) as publisher:
        await _send(publisher.producer, topic, command, value, signing_key)
    return command.command_id


class CancelPublisher:
    """Publishes cancel commands over one idempotent ``acks=all`` producer that it opens and always closes.

    ``async with CancelPublisher(bootstrap_servers, kafka_options=...) as publisher:`` then
    ``command_id = await publisher.cancel(provider, batch_id, ...)`` as often as needed; leaving the block
    closes the producer, and so does a failed start (an unreachable broker), so nothing is left open on
    any path. ``publish_cancel`` is the one-command convenience over it.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = DEFAULT_COMMANDS_TOPIC,
        kafka_options: Mapping[str, Any] | None = None,
        signing_key: bytes | None = None,
    ) -> None:
        self.topic = topic
        self._signing_key = signing_key
        self._options = {"bootstrap_servers": bootstrap_servers, **dict(kafka_options or {})}
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("CancelPublisher is not started (use it as `async with`)")
        return self._producer

    async def start(self) -> None:
        producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **self._options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # a failed start leaves its connections and tasks behind otherwise
            raise
        self._producer = producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> CancelPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def cancel(
        self, provider: str, batch_id: str, *, account: str = "default", reason: str | None = None, **fields: Any
    ) -> str:
        """Send one cancel command (``build_command``'s fields) and return its ``command_id`` once acknowledged."""
        command, value = _prepared(
            provider, batch_id, account=account, reason=reason, signing_key=self._signing_key, fields=fields
        )
        await _send(self.producer, self.topic, command, value, self._signing_key)
        return command.command_id


def _prepared(
    provider: str,
    batch_id: str,
    *,
    account: str,
    reason: str | None,
    signing_key: bytes | None,
    fields: dict[str, Any],
) -> tuple[CancelCommand, bytes]:
    """The command and its bytes, validated as the worker will (before any connection)."""
    if signing_key is not None:
        fields.setdefault("requested_at", datetime.now(UTC))
    command = build_command(provider, batch_id, account=account, reason=reason, **fields)
    return command, encode_command(command)


async def _send(
    producer: AIOKafkaProducer, topic: str, command: CancelCommand, value: bytes, signing_key: bytes | None
) -> None:
    key = batch_key(command.provider, command.account, command.batch_id)
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.kafka.message.key": key,
        "messaging.message.id": command.command_id,
    }
    with _tracer.start_as_current_span(f"send {topic}", kind=trace.SpanKind.PRODUCER, attributes=attributes):
        headers = [("content-type", b"application/json"), *trace_headers()]
        if signing_key is not None:
            headers.append(sign(value, signing_key))
        await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)


def publish_cancel_sync(
    bootstrap_servers: str,
    provider: str,
    batch_id: str,
    *,
    account: str = "default",
    reason: str | None = None,
    topic: str = DEFAULT_COMMANDS_TOPIC,
    **fields: Any,
) -> str:
    """``publish_cancel`` for synchronous code (scripts, Celery tasks, Django views without an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("publish_cancel_sync called inside an event loop; await publish_cancel instead")
    return asyncio.run(
        publish_cancel(bootstrap_servers, provider, batch_id, account=account, reason=reason, topic=topic, **fields)
    )


class EventFollower:
    """Reads every partition of the events topic from a position fixed when it is entered.

    Enter it *before* publishing (``since=None``: the current end offsets, fetched eagerly) or give the
    time the command was sent (``since``: offsets by timestamp). No consumer group is joined, so nothing
    is committed and nothing waits for a rebalance; a wait costs one connection and no broker state.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = DEFAULT_EVENTS_TOPIC,
        *,
        since: datetime | None = None,
        kafka_options: Mapping[str, Any] | None = None,
    ):
        self.topic = topic
        self._since = since
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, **dict(kafka_options or {})
        )

    async def __aenter__(self) -> EventFollower:
        await self._consumer.start()
        try:
            await self._position()
        except BaseException:
            await stop_client(self._consumer, "events consumer")
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await stop_client(self._consumer, "events consumer")  # aiokafka#647 must not look like a cancellation

    async def _position(self) -> None:
        # ``consumer.topics()`` fetches the same metadata but returns only names and leaves the client's own
        # cache empty (``partitions_for_topic`` would say None), so ask the client once and keep the answer.
        cluster = await self._consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(self.topic)
        if not partitions:
            raise LookupError(f"events topic {self.topic!r} does not exist on the broker")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        ends = await self._consumer.end_offsets(tps)
        starts = dict(ends)
        if self._since is not None:
            ms = int(self._since.timestamp() * 1000)
            found = await self._consumer.offsets_for_times(dict.fromkeys(tps, ms))
            starts.update({tp: hit.offset for tp, hit in found.items() if hit is not None})
        for tp in tps:
            self._consumer.seek(tp, starts[tp])

    async def records(self, timeout_ms: int) -> list[tuple[dict[str, bytes], bytes | None]]:
        """The next records as (headers, value), waiting at most ``timeout_ms``."""
        batch = await self._consumer.getmany(timeout_ms=max(timeout_ms, 0))
        return [(dict(r.headers), r.value) for records in batch.values() for r in records]

    async def outcome(
        self, command_id: str, *, timeout: float, on_event: EventCallback | None = None
    ) -> BatchStateEvent:
        """The command's final event; ``on_event`` sees each of its events once (duplicates are dropped)."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        last: BatchStateEvent | None = None
        wanted = command_id.encode()
        while (remaining := deadline - time.monotonic()) > 0:
            for headers, value in await self.records(int(min(remaining, 0.5) * 1000)):
                header_id = headers.get("ce_commandid")
                if header_id is not None and header_id != wanted:
                    continue  # most events belong to other commands: skip them without parsing
                event = parse_event(value)
                if event is None or event.command_id != command_id or event.event_id in seen:
                    continue
                seen.add(event.event_id)
                last = event
                if on_event is not None:
                    on_event(event)
                if event.final:
                    return event
        raise OutcomeTimeout(command_id, timeout, last)


def parse_event(value: bytes | None) -> BatchStateEvent | None:
    """One record of the events topic as the contract's ``BatchStateEvent``; ``None`` for anything else (the
    topic may carry other records). Fields a newer worker adds are ignored, so the client keeps working."""
    if not value:
        return None
    try:
        return BatchStateEvent.model_validate_json(value)
    except ValueError:
        return None


async def wait_for_outcome(
    bootstrap_servers: str,
    command_id: str,
    *,
    events_topic: str = DEFAULT_EVENTS_TOPIC,
    timeout: float,
    on_event: EventCallback | None = None,
    since: datetime | None = None,
    kafka_options: Mapping[str, Any] | None = None,
) -> BatchStateEvent:
    """Wait for a command already sent: reads from ``since`` (default: five minutes ago) to its final event.

    Reading from a time rather than from "now" is what makes calling this *after* ``publish_cancel`` safe;
    to wait without any look-back, enter an ``EventFollower`` before publishing instead.
    """
    start = since if since is not None else datetime.now(UTC) - DEFAULT_LOOKBACK
    async with EventFollower(bootstrap_servers, events_topic, since=start, kafka_options=kafka_options) as follower:
        return await follower.outcome(command_id, timeout=timeout, on_event=on_event)
