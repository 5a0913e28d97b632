"""The signals topic: the receiver writes verified pushes (``SignalWriter``), every worker reads them all
(``SignalListener``).

How a signal reaches the worker that follows its batch: it does not know which one that is. A follow belongs to
whoever owns the commands partition its command came in on, and that partition is the publisher's choice (its
key, its partitioner), not ours to compute. Signals are few (one or a handful per batch), so every worker reads
the whole topic, outside any consumer group, and a worker that holds no follow of the batch drops the signal.

Why a worker starts reading at the end of the topic, and why that loses nothing: the listener takes the end
offsets before the worker joins the commands group. A follow this worker comes to hold is either started here
(its cancel's confirming poll follows the cancel) or resumed from the follows topic (a resumed follow polls
within ``follow_initial_interval_s``). A signal written before the listener's start offsets is about a change
that happened before that, so that first poll sees it; one written after is read. A signal that arrives while
its follow moves between workers is dropped by the old owner (it stopped the follow) and either read by the new
one after the follow is resumed, or made moot by the resumed follow's first poll. The safety-net poll
(``push.poll_interval_s``) bounds everything else: a signal never read, a push never sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from worker.config import KafkaConnection
from worker.contract import BatchSignal, decode_signal, encode_signal
from worker.kafka.connection import client_kwargs, stop_client
from worker.retry import retry_until_done

__all__ = ["SignalListener", "SignalWriter"]

log = logging.getLogger("worker.kafka.signals")


class SignalWriter:
    """The receiver's producer: idempotent, ``acks=all``; ``write`` returns once every in-sync replica has the
    signal and raises when the broker cannot take it within ``timeout`` seconds."""

    def __init__(self, settings: KafkaConnection, topic: str, timeout: float) -> None:
        self._topic = topic
        self._timeout = timeout
        self._producer = AIOKafkaProducer(
            **client_kwargs(settings),
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(timeout * 1000),
        )
        self.failing = False

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await stop_client(self._producer, "signal producer")

    async def write(self, signal: BatchSignal) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._producer.send_and_wait(self._topic, encode_signal(signal), key=signal.key.encode())
        except (KafkaError, TimeoutError):
            self.failing = True
            raise
        self.failing = False


class SignalListener:
    """Every partition of the signals topic, from its end at ``start``; each signal goes to ``deliver``."""

    def __init__(self, settings: KafkaConnection, topic: str, deliver: Callable[[BatchSignal], object]) -> None:
        self._topic = topic
        self._deliver = deliver
        # Subscribed without a group: aiokafka assigns every partition of the topic to this consumer.
        self._consumer = AIOKafkaConsumer(
            topic, **client_kwargs(settings), group_id=None, enable_auto_commit=False, auto_offset_reset="latest"
        )

    async def start(self, timeout: float = 30.0) -> None:
        """Connect and take the end offsets (see the module docstring for why before the commands group)."""
        await self._consumer.start()
        try:
            async with asyncio.timeout(timeout):
                while not self._consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no event for it
                    await asyncio.sleep(0.05)  # the first metadata answer assigns the partitions
                assigned = list(self._consumer.assignment())
                for tp, offset in (await self._consumer.end_offsets(assigned)).items():
                    self._consumer.seek(tp, offset)
        except BaseException:
            await stop_client(self._consumer, "signal consumer")
            raise

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop``. A failing fetch is retried without end (``retry_until_done``): without signals
        the follows still end, by their safety polls, so nothing here may stop the worker."""
        try:
            while not stop.is_set():
                batches = await retry_until_done(
                    lambda: self._consumer.getmany(timeout_ms=500),
                    retry_if=lambda exc: isinstance(exc, KafkaError),
                    on_retry=self._failed,
                    wait_first_s=1.0,
                    wait_max_s=30.0,
                )
                for records in batches.values():
                    for record in records:
                        self._one(record.value)
        finally:
            await stop_client(self._consumer, "signal consumer")

    def _failed(self, attempt: int, exc: BaseException, wait_s: float) -> None:
        log.error(
            "reading %s failed (%s, attempt %d); follows rely on their safety polls, next try in %.1fs",
            self._topic,
            exc,
            attempt,
            wait_s,
        )

    def _one(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            signal = decode_signal(value)
        except ValidationError as exc:
            log.error("unreadable record on %s skipped: %s", self._topic, exc.errors()[0]["msg"])
            return
        self._deliver(signal)
