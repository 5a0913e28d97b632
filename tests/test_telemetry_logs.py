"""Log lines: JSON with trace and command fields, and client-library noise rate-limited."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from worker.telemetry import JsonFormatter, OncePer, configure_logging


def test_repeated_client_errors_are_kept_once_per_interval_with_a_count() -> None:
    f = OncePer(3600.0, prefix="aiokafka")
    first, second, third = (
        logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, "Unable connect to %s", ("n",), None)
        for _ in range(3)
    )
    assert f.filter(first) and not f.filter(second) and not f.filter(third)
    other = logging.LogRecord("worker.app", logging.ERROR, __file__, 1, "Unable connect to %s", ("n",), None)
    assert f.filter(other), "only the prefixed loggers are limited"


@pytest.fixture
def own_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers (here: one on capsys' stderr); later tests get theirs back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("own_logging")
def test_json_lines_carry_command_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    logging.getLogger("worker.test").info(
        "command finished: %s", "cancelled", extra={"command_id": "c-1", "batch_id": "b"}
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "command finished: cancelled"
    assert line["command_id"] == "c-1" and line["batch_id"] == "b" and line["level"] == "info"
    assert isinstance(JsonFormatter(), logging.Formatter)


class _Rec:
    topic, partition, offset, key, timestamp = "commands", 0, 7, None, 0

    def __init__(self, headers: list[tuple[str, bytes]]) -> None:
        self.headers = headers


def test_without_an_exporter_events_still_continue_the_publishers_trace() -> None:
    from worker.telemetry import CommandTracing, TraceHeaders

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = CommandTracing("g").command_context(_Rec([("traceparent", parent.encode())]))
    ((name, value),) = TraceHeaders().headers(ctx)
    version, trace_id, span_id, flags = value.decode().split("-")
    assert (name, version, trace_id, flags) == ("traceparent", "00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert span_id != "b7ad6b7169203331", "the command gets a span id of its own"


def test_a_malformed_traceparent_starts_a_new_trace() -> None:
    from worker.telemetry import CommandTracing, TraceHeaders

    ctx = CommandTracing("g").command_context(_Rec([("traceparent", b"00-garbage-\xff")]))
    ((_, value),) = TraceHeaders().headers(ctx)
    assert len(value.decode().split("-")[1]) == 32 and value.decode().split("-")[1] != "0" * 32
