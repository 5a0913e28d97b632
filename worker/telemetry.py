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
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

__all__ = ["LOG_FIELDS", "JsonFormatter", "configure_logging"]

#: ``extra`` keys copied into every log line when present.
LOG_FIELDS = ("command_id", "provider", "account", "batch_id", "partition", "offset", "status", "attempt", "cause")


def _trace_ids() -> dict[str, str]:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_trace_ids())
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


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every reconnect attempt at ERROR; one line per retry is noise, a lost broker shows in health.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # httpx logs each request at INFO; the provider client logs what matters (never the headers).
    logging.getLogger("httpx").setLevel(logging.WARNING)
