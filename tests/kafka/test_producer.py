"""The producer's own rules: retry a failed send until it lands, and say so in readiness while it cannot."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from worker.config import Settings
from worker.kafka.producer import EventProducer


async def test_failing_sends_are_retried_and_readiness_reflects_them() -> None:
    producer = EventProducer(Settings())
    calls = 0
    release = asyncio.Event()
    failed_twice = asyncio.Event()

    async def send_and_wait(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            failed_twice.set()
        if not release.is_set():
            raise KafkaTimeoutError()

    producer._producer.send_and_wait = send_and_wait
    assert producer.healthy(grace=0)
    task = asyncio.create_task(producer._send("events", None, b"{}", []))
    async with asyncio.timeout(10):
        await failed_twice.wait()
    assert not producer.healthy(grace=0), "failing for any time at all with no grace"
    assert producer.healthy(grace=3600), "within the grace period a hiccup is not an outage"
    release.set()
    async with asyncio.timeout(10):
        await task
    assert producer.healthy(grace=0) and producer.published == 1 and producer.failures >= 2
