"""Traces that continue the publisher's.

A command's Kafka headers carry the publisher's W3C ``traceparent``; the worker's ``process``
span for that command is its child (kind CONSUMER, OpenTelemetry messaging conventions), the provider
calls happen under it, and every event or dead letter published for the command carries the ``traceparent``
of that span, so a consumer downstream continues the same trace. Exporters are chosen by the standard
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``); with nothing configured nothing is exported and
no connection is attempted, but spans still exist so logs carry trace ids (logs.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from worker.config import trace_exporters

__all__ = [
    "TRACER",
    "CommandContext",
    "CommandTracing",
    "TraceHeaders",
    "configure_tracing",
    "exporting",
    "span_ids",
    "trace_carrier",
]

TRACER = trace.get_tracer("batch-cancel-worker")
log = logging.getLogger("worker.telemetry")


def configure_tracing() -> TracerProvider | None:
    """Install the SDK tracer provider with the exporters ``OTEL_TRACES_EXPORTER`` names, if any
    (``config.trace_exporters`` reads and validates them).

    With no exporter no SDK provider is installed at all: recording spans nobody exports costs CPU per
    command for nothing (docs/benchmarks.md). Trace context still flows: see ``CommandTracing``.
    """
    names = trace_exporters(os.environ)
    if not names:
        return None
    os.environ.setdefault("OTEL_SERVICE_NAME", "batch-cancel-worker")
    provider = TracerProvider(resource=Resource.create())
    for name in names:
        exporter = ConsoleSpanExporter() if name == "console" else _otlp_exporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    global _exporting  # noqa: PLW0603 - set once at start-up, read when spans and HTTP clients are made
    _exporting = True
    return provider


_exporting = False


def exporting() -> bool:
    """Whether spans leave the process: per-attempt HTTP spans are only worth their CPU when they do."""
    return _exporting


def _otlp_exporter() -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    """Reads W3C headers from aiokafka's list of (name, bytes); a value that is not UTF-8 counts as absent."""

    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        values = []
        for name, value in carrier:
            if name.lower() == key:
                try:
                    values.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
                except UnicodeDecodeError:
                    continue
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _HeaderGetter()


@dataclass(slots=True)
class CommandContext:
    """What travels with one command: its span's context, and its Kafka timestamp for latency metrics.

    ``traceparent``/``tracestate`` are the W3C headers of the command's span, formatted once: every event,
    dead letter and follow-state record of the command carries them, and running the propagators for each of
    those cost more than building the event itself. Two strings, not a dict: a process holds 100,000 of these.
    """

    otel: otel_context.Context
    span: trace.Span
    produced_at: float  # seconds since the epoch, from the record's Kafka timestamp
    first_event_at: float | None = None
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def carrier(self) -> dict[str, str]:
        out = {"traceparent": self.traceparent} if self.traceparent else {}
        return out | ({"tracestate": self.tracestate} if self.tracestate else {})

    @property
    def log_ids(self) -> dict[str, str]:
        """``trace_id``/``span_id`` for a log line about this command written outside its span's context."""
        return span_ids(self.span.get_span_context())

    def trace_fields(self) -> tuple[str | None, str | None, float]:
        """What a follow-state record keeps of the command: traceparent, tracestate, Kafka timestamp."""
        return self.traceparent, self.tracestate, self.produced_at

    @classmethod
    def of(cls, span: trace.Span, parent: otel_context.Context, produced_at: float) -> CommandContext:
        traceparent, tracestate = _w3c(span.get_span_context())
        context = trace.set_span_in_context(span, parent)
        return cls(context, span, produced_at, traceparent=traceparent, tracestate=tracestate)


def _w3c(span: SpanContext) -> tuple[str | None, str | None]:
    """``traceparent`` and ``tracestate`` (None when empty) of a span, as W3C Trace Context writes them."""
    if not span.is_valid:
        return None, None
    traceparent = f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"
    return traceparent, span.trace_state.to_header() if span.trace_state else None


class CommandTracing:
    """Opens the CONSUMER span of one command as the child of the publisher's span (if it sent one)."""

    def __init__(self, group_id: str) -> None:
        self._group_id = group_id

    def command_context(self, record: Any) -> CommandContext:
        headers = list(record.headers or ())
        parent = propagate.extract(headers, getter=_GETTER)
        if (
            any(n.lower() == "traceparent" for n, _ in headers)
            and not trace.get_current_span(parent).get_span_context().is_valid
        ):
            log.debug("ignoring a malformed traceparent header on %s@%d", record.partition, record.offset)
        if _exporting:
            name = f"process {record.topic}"
            span = TRACER.start_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=self._attributes(record))
        else:  # nothing would read the attributes: not even built
            span = _light_span(parent)
        timestamp = getattr(record, "timestamp", None)
        produced_at = timestamp / 1000 if isinstance(timestamp, int) and timestamp > 0 else time.time()
        return CommandContext.of(span, parent, produced_at)

    def _attributes(self, record: Any) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.consumer.group.name": self._group_id,
        }
        if getattr(record, "key", None):
            attributes["messaging.kafka.message.key"] = record.key.decode("utf-8", "replace")
        return attributes

    def resumed_context(
        self, traceparent: str | None, tracestate: str | None, received_at: float | None
    ) -> CommandContext:
        """The context of a command resumed from the follow-state topic on another worker.

        Its span was the old owner's; events published from here on carry that same span as their parent,
        so a downstream consumer sees one trace before and after the move, with no new span in between.
        """
        carrier = {"traceparent": traceparent or "", "tracestate": tracestate or ""}
        parent = propagate.extract({k: v for k, v in carrier.items() if v})
        span = trace.get_current_span(parent)
        if not span.get_span_context().is_valid:
            span = _light_span(parent)
        return CommandContext.of(span, parent, received_at or time.time())


_IDS = RandomIdGenerator()


def _light_span(parent: otel_context.Context) -> trace.Span:
    """A span that records nothing but has its own id in the publisher's trace (or a new one).

    Without an exporter this keeps what matters: events carry a ``traceparent`` that continues the
    publisher's trace with the publisher's sampling decision, and log lines carry trace ids.
    """
    up = trace.get_current_span(parent).get_span_context()
    if up.is_valid:
        ctx = SpanContext(up.trace_id, _IDS.generate_span_id(), False, up.trace_flags, up.trace_state)
    else:
        ctx = SpanContext(_IDS.generate_trace_id(), _IDS.generate_span_id(), False, TraceFlags(TraceFlags.SAMPLED))
    return NonRecordingSpan(ctx)


class TraceHeaders:
    """Headers that continue a command's trace on what we publish for it (``traceparent``, ``tracestate``)."""

    def headers(self, context: Any) -> list[tuple[str, bytes]]:
        return [(name, value.encode()) for name, value in trace_carrier(context).items()]


def trace_carrier(context: Any) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of a command's context; empty for anything else."""
    return context.carrier if isinstance(context, CommandContext) else {}


def span_ids(ctx: SpanContext) -> dict[str, str]:
    """A span's ids as log lines carry them (none for an invalid span)."""
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
