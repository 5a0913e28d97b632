"""The walking skeleton's proof: a real broker, a consumer group with manual commits, and a broker restart."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devstack.broker import KAFKA_VERSION, KafkaBroker
from tests.conftest import TopicFactory


def test_the_broker_is_real_apache_kafka(kafka: KafkaBroker) -> None:
    assert kafka.version() == KAFKA_VERSION


async def test_group_consume_with_manual_commit(kafka: KafkaBroker, new_topic: TopicFactory) -> None:
    topic = new_topic("roundtrip", partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i}".encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"g-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        seen: dict[TopicPartition, int] = {}
        values: set[bytes] = set()
        deadline = time.monotonic() + 30
        while len(values) < 10 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                values.update(r.value for r in records if r.value is not None)
                seen[tp] = records[-1].offset + 1
        assert values == {f"v{i}".encode() for i in range(10)}
        await consumer.commit(seen)
        for tp, next_offset in seen.items():
            assert await consumer.committed(tp) == next_offset
        assert sum(seen.values()) == 10
    finally:
        await consumer.stop()


async def test_client_reconnects_after_broker_restart(new_topic: TopicFactory) -> None:
    """A private broker, because restarting the shared one would disturb other tests."""
    broker = KafkaBroker()
    await asyncio.to_thread(broker.start)
    try:
        await asyncio.to_thread(broker.create_topic, "restart", 1)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait("restart", b"before")
            await asyncio.to_thread(broker.restart)
            deadline = time.monotonic() + 60
            while True:
                try:
                    await asyncio.wait_for(producer.send_and_wait("restart", b"after"), 10)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            "restart",
            bootstrap_servers=broker.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while b"after" not in got and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(r.value for r in records if r.value is not None)
            assert got[:1] == [b"before"] and b"after" in got
        finally:
            await consumer.stop()
    finally:
        await asyncio.to_thread(broker.close)
