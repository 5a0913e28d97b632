"""Logs: one JSON object per line in production, a readable line in ``make dev``.

Every record carries the current trace and span ids (when a span is active) and the command fields a
caller passed in ``extra`` (``command_id``, ``provider``, ``batch_id``…), so a log line can be joined to
its trace and its Kafka record at 3 a.m. Secrets never reach a log by construction: keys live in
``SecretStr`` and only the HTTP layer puts them in headers, which are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from worker.telemetry.tracing import span_ids

__all__ = ["LOG_FIELDS", "ConsoleFormatter", "JsonFormatter", "OncePer", "configure_logging"]


#: ``extra`` keys copied into every log line when present. ``event`` names a line that tools read (the
#: reliability suite, the benchmarks, an operator's queries), so they match on it and its fields
#: (``partitions``, ``follows``, ``seconds``), never on the wording of the message.
LOG_FIELDS = (
    "command_id",
    "provider",
    "account",
    "batch_id",
    "partition",
    "offset",
    "status",
    "attempt",
    "cause",
    "event",
    "partitions",
    "follows",
    "seconds",
)


def _trace_ids(record: logging.LogRecord) -> dict[str, str]:
    """The ids a caller passed in ``extra`` (a line about one command, written where another is current),
    else those of the current span."""
    given = record.__dict__.get("trace_id")
    if isinstance(given, str):
        return {"trace_id": given, "span_id": str(record.__dict__.get("span_id", ""))}
    return span_ids(trace.get_current_span().get_span_context())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_trace_ids(record))
        for name in LOG_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{n}={record.__dict__[n]}" for n in LOG_FIELDS if record.__dict__.get(n) is not None)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f"  [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class OncePer(logging.Filter):
    """Let a message template of loggers under ``prefix`` through at most once per ``interval`` seconds.

    A handler filter, because filters on a parent logger are not applied to its children's records.
    """

    def __init__(self, interval: float, prefix: str) -> None:
        super().__init__()
        self._interval = interval
        self._prefix = prefix
        self._last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefix):
            return True
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        last, dropped = self._last.get(key, (float("-inf"), 0))
        if now - last < self._interval:
            self._last[key] = (last, dropped + 1)
            return False
        if dropped:
            record.msg = f"{record.msg} (and {dropped} more like it in the last {self._interval:.0f}s)"
        self._last[key] = (now, 0)
        return True


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every reconnect attempt at ERROR (thousands of lines while a broker restarts): keep the
    # first of each kind per interval; a lost broker also shows in /readyz and the commit-lag metric.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    handler.addFilter(OncePer(30.0, prefix="aiokafka"))
    # httpx logs each request at INFO; the provider client logs what matters (never the headers).
    logging.getLogger("httpx").setLevel(logging.WARNING)
