"""Publishing outcomes: state events and dead letters, each acknowledged by every in-sync replica.

The producer is idempotent with ``acks=all``: its own retries after a broker hiccup cannot duplicate a
record, and "published" means durable. A send this module repeats after a timeout is a new send and may
duplicate one that did land; every event has a deterministic ``event_id`` for exactly that reason.
A send that still fails (broker down longer than the client's own delivery timeout) is retried with capped
backoff (``worker.retry.retry_until_done``) until it succeeds or the command is cancelled, because the
alternative — giving up — would leave a command without its outcome and its offset stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError, TopicAuthorizationFailedError

from worker.config import Settings
from worker.contract import (
    BatchStateEvent,
    DeadLetterReason,
    SelectorEvent,
    dead_letter_headers,
    encode_event,
    event_headers,
    event_key,
    selector_event_headers,
)
from worker.kafka.connection import client_kwargs
from worker.record import Record
from worker.retry import retry_until_done
from worker.telemetry import metrics

__all__ = ["EventProducer", "HeaderInjector"]

log = logging.getLogger("worker.kafka.producer")

#: ``ce_source`` of every event: which system produced it.
EVENT_SOURCE = "urn:batch-cancel-worker"
MAX_SENDS_IN_FLIGHT = 256
#: Failing to publish for this long makes the worker report itself not ready.
UNHEALTHY_AFTER_S = 30.0
#: Bytes buffered per partition before a send waits for the batch on the wire. aiokafka's 16 KiB default holds
#: about a dozen events: under load every further send parked on ``wait_drain`` (``asyncio.wait`` per send),
#: 7 % of the worker's CPU in a py-spy profile (docs/benchmarks.md).
BATCH_BYTES = 256 * 1024
#: A failed send is retried after a wait doubling from the first to the last (``worker.retry.retry_until_done``).
SEND_WAIT_FIRST_S = 0.1
SEND_WAIT_MAX_S = 5.0
#: What is kept of a dead letter the DLQ topic refuses as too large.
TRUNCATE_TO = 64 * 1024


class HeaderInjector(Protocol):
    """Turns a command's context into extra headers (``traceparent``…): ``telemetry.TraceHeaders``."""

    def headers(self, context: Any) -> list[tuple[str, bytes]]: ...


class _NoHeaders:
    def headers(self, context: Any) -> list[tuple[str, bytes]]:
        return []


class EventProducer:
    """The worker's one producer: state events (``publish``), dead letters (``dead_letter``) and follow-state
    records (``put``, for ``FollowStore``), each retried until the broker has it; ``healthy`` tells the
    readiness probe whether sends are getting through."""

    def __init__(self, settings: Settings, injector: HeaderInjector | None = None) -> None:
        self._settings = settings
        self._injector: HeaderInjector = injector or _NoHeaders()
        self._producer = AIOKafkaProducer(
            **client_kwargs(settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=BATCH_BYTES,
            max_request_size=settings.max_publish_bytes,
            request_timeout_ms=30_000,
        )
        # Bounds sends in flight: a burst of thousands of dead letters otherwise queues so deep in the client
        # that sends time out and retry in a storm (seen in the reliability suite's poison scenario).
        self._slots = asyncio.Semaphore(MAX_SENDS_IN_FLIGHT)
        self.published = 0
        self.failures = 0
        self._failing_since: float | None = None

    def healthy(self, grace: float = UNHEALTHY_AFTER_S) -> bool:
        """False once every send has failed for ``grace`` seconds (broker gone, ACL missing): /readyz says so."""
        return self._failing_since is None or time.monotonic() - self._failing_since < grace

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, event: BatchStateEvent, context: Any) -> None:
        headers = event_headers(event, source=EVENT_SOURCE, extra=self._injector.headers(context))
        await self._send(self._settings.events_topic, event_key(event), encode_event(event), headers)

    async def publish_selector(self, event: SelectorEvent, context: Any) -> None:
        """A selector's progress or final, on the events topic beside batch states (its own ``ce_type``)."""
        headers = selector_event_headers(event, source=EVENT_SOURCE, extra=self._injector.headers(context))
        key = None if event.key is None else event.key.encode()
        await self._send(self._settings.events_topic, key, event.model_dump_json().encode(), headers)

    async def send_command(self, key: str, value: bytes, context: Any) -> None:
        """A selector's child cancel command, keyed by its batch (the default partitioner places it where a
        publisher's own command for that batch goes); the selector's trace context travels with it."""
        await self._send(self._settings.commands_topic, key.encode(), value, self._injector.headers(context))

    async def dead_letter(self, record: Record, reason: DeadLetterReason, message: str, context: Any) -> None:
        headers = dead_letter_headers(
            list(record.headers or ()),
            reason=reason,
            message=message,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            at=datetime.now(UTC),
        )
        headers += [h for h in self._injector.headers(context) if h[0] not in {k for k, _ in headers}]
        key = getattr(record, "key", None)
        try:
            await self._send(self._settings.dlq_topic, key, record.value, headers)
        except (MessageSizeTooLargeError, RecordTooLargeError):
            # The broker took the command but the dead-letter topic will not take it back (a smaller
            # max.message.bytes). Stalling the partition forever would be worse than a truncated copy
            # that says so: keep the head of the value and record the original size.
            size = len(record.value or b"")
            log.error("dead letter of %d bytes refused as too large; storing the first %d bytes", size, TRUNCATE_TO)
            headers += [("bcw.dlq.truncated", b"true"), ("bcw.dlq.original_size", str(size).encode())]
            await self._send(self._settings.dlq_topic, key, (record.value or b"")[:TRUNCATE_TO], headers)

    async def put(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        """A follow-state record (``None``: tombstone) to an explicit partition, durable when this returns."""
        await self._send(topic, key, value, (), partition=partition)

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        *,
        partition: int | None = None,
    ) -> None:
        async def attempt() -> None:
            async with self._slots:
                await self._producer.send_and_wait(topic, value, key=key, headers=list(headers), partition=partition)

        def failed(attempt_number: int, exc: BaseException, wait_s: float) -> None:
            self.failures += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            metrics.EVENT_PUBLISH_FAILURES.inc()
            if isinstance(exc, TopicAuthorizationFailedError):
                log.error("not allowed to write to %s: grant this worker's principal WRITE on it", topic)
            else:
                log.warning("publishing to %s failed (%s); retrying in %.1fs", topic, exc, wait_s)

        await retry_until_done(
            attempt,
            retry_if=_worth_resending,
            on_retry=failed,
            wait_first_s=SEND_WAIT_FIRST_S,
            wait_max_s=SEND_WAIT_MAX_S,
        )
        self.published += 1
        self._failing_since = None


def _worth_resending(exc: BaseException) -> bool:
    """Kafka errors are, but a record too large for the topic stays too large: the caller decides."""
    return isinstance(exc, KafkaError) and not isinstance(exc, (MessageSizeTooLargeError, RecordTooLargeError))
