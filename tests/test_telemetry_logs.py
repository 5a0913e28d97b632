"""Log lines: JSON with trace and command fields, and client-library noise rate-limited."""

from __future__ import annotations

import json
import logging

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


def test_json_lines_carry_command_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    logging.getLogger("worker.test").info(
        "command finished: %s", "cancelled", extra={"command_id": "c-1", "batch_id": "b"}
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "command finished: cancelled"
    assert line["command_id"] == "c-1" and line["batch_id"] == "b" and line["level"] == "info"
    assert isinstance(JsonFormatter(), logging.Formatter)
