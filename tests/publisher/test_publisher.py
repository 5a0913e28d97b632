"""The publisher as its users meet it: a client that closes what it opened on every path, and a ``batch-cancel``
that reads only the Kafka connection from the environment (not the worker's own settings)."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from worker.publisher import CancelPublisher, publish_cancel
from worker.publisher.cli import EXIT_KAFKA, EXIT_USAGE

#: The ``batch-cancel`` command as installed beside this interpreter (the project's entry point).
BATCH_CANCEL = str(Path(sys.executable).with_name("batch-cancel"))


def _closed_port() -> str:
    """A loopback address nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def test_a_publish_to_an_unreachable_broker_raises_and_leaves_no_producer_open() -> None:
    unreachable = _closed_port()
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(str(context.get("message"))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KafkaConnectionError):
            await publish_cancel(unreachable, "openai", "batch_abc", kafka_options={"request_timeout_ms": 1000})
        with pytest.raises(KafkaConnectionError):
            async with CancelPublisher(unreachable, kafka_options={"request_timeout_ms": 1000}) as publisher:
                await publisher.cancel("openai", "batch_abc")
        gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed" in str(w.message)] + [
        m for m in reported if "Unclosed" in m
    ]
    assert unclosed == []


def test_a_publisher_is_not_stopped_by_settings_only_the_worker_validates() -> None:
    """With its own tracing exporter in the environment (one the worker cannot run), ``batch-cancel publish``
    still gets as far as the broker: the configuration is not what stops it."""
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin", "BCW_KAFKA_BOOTSTRAP_SERVERS": _closed_port()}
    env.pop("PYTHONWARNINGS", None)
    argv = [BATCH_CANCEL, "publish", "--provider", "openai", "--batch-id", "batch_abc"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert "configuration error" not in done.stderr, done.stderr
    assert "Kafka error" in done.stderr and done.returncode == EXIT_KAFKA, (done.returncode, done.stderr)


def test_a_bad_kafka_setting_is_a_configuration_error_for_every_subcommand() -> None:
    env = {**os.environ, "BCW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "BCW_KAFKA_BOOTSTRAP_SERVERS": _closed_port()}
    for argv in (["publish", "--provider", "openai", "--batch-id", "batch_abc"], ["follows"]):
        done = subprocess.run([BATCH_CANCEL, *argv], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == EXIT_USAGE and "configuration error" in done.stderr, (argv, done.stderr)
        assert "BCW_KAFKA_SASL_MECHANISM" in done.stderr
