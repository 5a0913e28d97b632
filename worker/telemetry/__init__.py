"""Telemetry: traces (tracing.py), logs (logs.py), Prometheus metrics (metrics.py) and the probes (health.py).

The package exports the tracing and logging names every part of the worker uses; ``metrics`` and ``health``
are imported by name (``from worker.telemetry import metrics``), so that what only needs a trace context
(the publisher) does not load prometheus-client and aiohttp.
"""

from worker.telemetry.logs import LOG_FIELDS, ConsoleFormatter, JsonFormatter, OncePer, configure_logging
from worker.telemetry.tracing import (
    TRACER,
    CommandContext,
    CommandTracing,
    TraceHeaders,
    configure_tracing,
    exporting,
    span_ids,
    trace_carrier,
)

__all__ = [
    "LOG_FIELDS",
    "TRACER",
    "CommandContext",
    "CommandTracing",
    "ConsoleFormatter",
    "JsonFormatter",
    "OncePer",
    "TraceHeaders",
    "configure_logging",
    "configure_tracing",
    "exporting",
    "span_ids",
    "trace_carrier",
]
