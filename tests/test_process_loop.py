"""The event loop the worker runs on (``worker/process.py``) must keep aiokafka alive when a broker connection is
reset: on uvloop a write to the reset connection raises ``RuntimeError``, which aiokafka does not catch and
which kills its producer's sender for good (aio-libs/aiokafka#1038; found by issue 29's scenario d)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

from devstack.broker import KafkaBroker
from worker import process as loop


def test_auto_is_asyncios_loop_and_uvloop_only_on_request() -> None:
    assert loop.loop_factory("auto") is asyncio.new_event_loop
    assert loop.loop_factory("asyncio") is asyncio.new_event_loop
    assert loop.loop_factory("uvloop") is not asyncio.new_event_loop


def test_a_write_to_a_reset_kafka_connection_is_a_connection_error_on_the_default_loop(kafka: KafkaBroker) -> None:
    async def main() -> None:
        conn = await create_conn("127.0.0.1", kafka.port)
        try:
            conn._writer.transport.abort()  # the peer reset it
            await asyncio.sleep(0)  # the loop closes the transport; aiokafka's reader has not run yet
            with pytest.raises(KafkaConnectionError):
                await asyncio.wait_for(conn.send(MetadataRequest([])), 10)
        finally:
            conn.close()

    loop.run(main())
