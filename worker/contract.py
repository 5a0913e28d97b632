"""The public contract: cancel command in, batch-state events out, dead letters aside.

These pydantic models are the single source of truth; ``schemas/*.schema.json`` are generated from them
(``python -m worker.schemagen``) so that publishers in any language can validate without reading Python.

Design choices that a publisher will notice:

* **Unknown fields in a command are rejected**, not ignored. A cancel command is a powerful message: if a
  future version adds, say, ``dry_run: true`` and an older worker silently ignored it, that worker would
  cancel for real. A new optional field therefore ships together with a new ``schema_version``.
* **Events are the other way round**: consumers should ignore fields they do not know, because the worker
  may add optional ones within ``schema_version`` 1; the event schema therefore allows extra properties.
* ``batch_id`` goes into a URL path, so it is held to a conservative pattern (no ``/``, ``%``, ``?``, ``#``,
  ``..``, whitespace or control characters) before anything else looks at it.
* Provider timestamps are normalised to Unix seconds or ``null``: DashScope's ``0`` and an absent field both
  mean "has not happened".
* Wire input is validated in pydantic's *strict* JSON mode, so ``"follow": "yes"`` or ``"follow_timeout_s":
  "30"`` fail here exactly as they fail against the JSON Schema a Go or Node publisher validates with.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

__all__ = [
    "BATCH_ID_PATTERN",
    "CE_TYPE_FINAL",
    "CE_TYPE_STATE",
    "DLQ_MESSAGE_HEADER",
    "DLQ_REASON_HEADER",
    "DLQ_TIME_HEADER",
    "FAILURE_OUTCOMES",
    "NAME_PATTERN",
    "TERMINAL_STATUSES",
    "BatchError",
    "BatchSnapshot",
    "BatchStateEvent",
    "BatchStatus",
    "CancelCommand",
    "CommandCloudEvent",
    "DeadLetterReason",
    "FailureDetail",
    "InvalidCommand",
    "Outcome",
    "RequestCounts",
    "batch_key",
    "dead_letter_headers",
    "decode_command",
    "encode_event",
    "event_headers",
    "event_key",
    "failure_event",
    "state_event",
]

#: Conservative on purpose: every provider id seen (``batch_abc123``, ``batch_rdyqgrcgjg``, UUIDs) fits.
BATCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$"
#: Provider and account names are the operator's own configuration keys.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: Messages travel in headers and logs: short, and never the offending input itself beyond a snippet.
MAX_MESSAGE_CHARS = 512
#: Raw provider/account/batch_id strings echoed in an ``invalid`` event are cut off here.
MAX_ECHO_CHARS = 256

CE_TYPE_STATE = "io.batch-cancel-worker.batch.state"
CE_TYPE_FINAL = "io.batch-cancel-worker.batch.final"
DLQ_REASON_HEADER = "bcw.dlq.reason"
DLQ_MESSAGE_HEADER = "bcw.dlq.message"
DLQ_TIME_HEADER = "bcw.dlq.time"
# A fixed namespace, so event ids are the same on every worker and after every restart.
_EVENT_ID_NAMESPACE = uuid.UUID("8f4a3c52-6d1e-5b7a-9c0e-2f61b5d4a7e3")


class BatchStatus(StrEnum):
    """One status vocabulary for every provider; the raw string travels beside it as ``provider_status``."""

    VALIDATING = "validating"
    QUEUED = "queued"  # SiliconFlow's ``in_queue``
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # a string no dialect knows; following continues, the raw value is kept

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({BatchStatus.CANCELLED, BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED})


class Outcome(StrEnum):
    """How a command ended; carried by its one final event, which a publisher waits for."""

    CANCELLED = "cancelled"
    COMPLETED = "completed"  # the batch finished before the cancel took effect
    FAILED = "failed"
    EXPIRED = "expired"
    ACCEPTED = "accepted"  # ``follow: false``: the provider took the cancel; the batch was not yet terminal
    REJECTED = "rejected"  # the provider refused (401/403/404/…): ``detail`` has its HTTP status and message
    GAVE_UP = "gave_up"  # retries exhausted or follow timeout: ``detail`` says which
    INVALID = "invalid"  # the command was dead-lettered: ``detail.code`` is the dead-letter reason


FAILURE_OUTCOMES = frozenset({Outcome.REJECTED, Outcome.GAVE_UP, Outcome.INVALID})
_TERMINAL_OUTCOMES = frozenset({Outcome.CANCELLED, Outcome.COMPLETED, Outcome.FAILED, Outcome.EXPIRED})


class DeadLetterReason(StrEnum):
    """Stable codes in the ``bcw.dlq.reason`` header; dashboards and replay tooling match on them."""

    INVALID_JSON = "invalid_json"
    INVALID_ENCODING = "invalid_encoding"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_PROVIDER = "unknown_provider"
    UNKNOWN_ACCOUNT = "unknown_account"
    INVALID_BATCH_ID = "invalid_batch_id"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"


def _no_dot_dot(value: str) -> str:
    if ".." in value:
        raise ValueError("must not contain '..'")
    return value


BatchId = Annotated[
    str,
    StringConstraints(pattern=BATCH_ID_PATTERN),
    AfterValidator(_no_dot_dot),
    # The same rule for JSON Schema users; a separate ``not`` because RE2 (Go) and Rust have no lookahead.
    Field(examples=["batch_abc123"], json_schema_extra={"not": {"pattern": r"\.\."}}),
]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
CommandId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def batch_key(provider: str, account: str, batch_id: str) -> str:
    """The Kafka key for commands and events: every record about one batch lands on one partition, in order."""
    return f"{provider}/{account}/{batch_id}"


class CancelCommand(BaseModel):
    """Ask the worker to cancel one batch and (by default) follow it until it is terminal."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="CancelCommand")

    schema_version: Literal[1] = Field(1, description="Contract version; bumped when a field is added.")
    command_id: CommandId = Field(
        description="The publisher's idempotency key (a UUID is recommended); echoed in every event."
    )
    provider: Name = Field(description="A provider name the operator configured, never a URL.")
    account: Name = Field("default", description="A credential name configured under that provider.")
    batch_id: BatchId
    reason: Annotated[str, StringConstraints(max_length=1024)] | None = None
    requested_by: Annotated[str, StringConstraints(max_length=256)] | None = None
    requested_at: AwareDatetime | None = Field(None, description="RFC 3339 time (with offset) the cancel was asked.")
    follow: bool = Field(True, description="Follow the batch to a terminal state (false: report the cancel reply).")
    follow_timeout_s: float | None = Field(
        None, gt=0, le=7 * 24 * 3600, description="Stop following after this long; the worker's own cap still applies."
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=16)

    @property
    def key(self) -> str:
        return batch_key(self.provider, self.account, self.batch_id)


class CommandCloudEvent(BaseModel):
    """A command in a CloudEvents 1.0 structured-mode JSON envelope, as Knative, Argo Events or Dapr send it.

    Only ``data`` matters to the worker; the envelope is checked just enough to be sure it *is* one.
    ``data_base64`` is refused: the CloudEvents JSON format puts JSON data in ``data`` as a value, and
    accepting base64 too would give a second, harder-to-inspect way to smuggle the same command.
    """

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        title="CancelCommandCloudEvent",
        json_schema_extra={"not": {"required": ["data_base64"]}},
    )

    specversion: Literal["1.0"]
    id: Annotated[str, StringConstraints(min_length=1)]
    source: Annotated[str, StringConstraints(min_length=1)]
    type: Annotated[str, StringConstraints(min_length=1)] = Field(examples=["io.batch-cancel-worker.batch.cancel"])
    subject: str | None = None
    time: AwareDatetime | None = None
    datacontenttype: (
        Annotated[str, StringConstraints(pattern=r"^application/([A-Za-z0-9.+-]+\+)?json(;.*)?$")] | None
    ) = None
    dataschema: str | None = None
    data: CancelCommand

    @model_validator(mode="after")
    def _no_base64(self) -> Self:
        if self.model_extra and "data_base64" in self.model_extra:
            raise ValueError("data_base64 is not accepted; send the command as a JSON object in data")
        return self


class BatchError(BaseModel):
    """One provider error, whether it came as a bare string (SiliconFlow) or an object (OpenAI, DashScope)."""

    model_config = ConfigDict(extra="ignore")

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class RequestCounts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    total: int | None = None
    completed: int | None = None
    failed: int | None = None


_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


class BatchSnapshot(BaseModel):
    """A provider's batch object, normalised: what a dialect parser returns and a state event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: BatchStatus
    provider_status: str = Field(description="The provider's raw status string, kept even when it maps cleanly.")
    created_at: int | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts | None = None
    errors: list[BatchError] = Field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.status.terminal


def _bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Printable and short: these strings end up in Kafka headers and log lines, often quoting hostile input."""
    clean = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


class FailureDetail(BaseModel):
    """Why a command ended without reaching a terminal batch state."""

    model_config = ConfigDict(frozen=True)

    http_status: int | None = Field(None, description="The provider's HTTP status, when it answered.")
    code: str | None = Field(None, description="Provider error code, dead-letter reason, or the worker's own code.")
    message: Annotated[str, BeforeValidator(lambda v: _bounded(v, 1024) if isinstance(v, str) else v)] = Field(
        max_length=1024, description="Human-readable; truncated, never holds a credential."
    )


Echo = Annotated[str, StringConstraints(max_length=MAX_ECHO_CHARS)]
UnixSeconds = int | None


def _event_rules(schema: dict[str, Any]) -> None:
    """The cross-field rules of ``BatchStateEvent._consistent``, for JSON Schema validators in other languages."""

    def has(field: str, *values: str) -> dict[str, Any]:
        return {"properties": {field: {"enum": list(values)}}, "required": [field]}

    def prop(field: str, sub: dict[str, Any]) -> dict[str, Any]:
        return {"properties": {field: sub}}

    failures = sorted(o.value for o in FAILURE_OUTCOMES)
    terminal = sorted(s.value for s in TERMINAL_STATUSES)
    schema["allOf"] = [
        {
            "if": prop("final", {"const": True}),
            "then": prop("outcome", {"type": "string"}),
            "else": prop("outcome", {"type": "null"}),
        },
        {
            "if": has("outcome", *failures),
            "then": prop("detail", {"type": "object"}),
            "else": prop("detail", {"type": "null"}),
        },
        {
            "if": has("status", *terminal),
            "then": prop("terminal", {"const": True}),
            "else": prop("terminal", {"const": False}),
        },
        {
            "if": {"not": has("outcome", Outcome.INVALID.value)},
            "then": {"properties": {k: {"type": "string"} for k in ("provider", "account", "batch_id")}},
        },
        *(
            {"if": has("outcome", o.value), "then": prop("status", {"const": o.value})}
            for o in sorted(_TERMINAL_OUTCOMES)
        ),
    ]


class BatchStateEvent(BaseModel):
    """The value of an events-topic record: one observed batch state, or a command's final outcome.

    Timestamps are flattened (``cancelled_at``, not ``timestamps.cancelled_at``) so a Go consumer maps the
    whole event onto one struct of ``*int64`` fields. Every field is always present, ``null`` when unknown.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        title="BatchStateEvent",
        json_schema_serialization_defaults_required=True,
        json_schema_extra=_event_rules,
    )

    schema_version: Literal[1] = 1
    event_id: str = Field(description="Deterministic UUID: a redelivered duplicate carries the same id.")
    command_id: CommandId
    provider: Echo | None = Field(description="Null only in an ``invalid`` event whose command did not name one.")
    account: Echo | None
    batch_id: Echo | None
    final: bool = Field(description="True on the one last event of this command; stop waiting when you see it.")
    outcome: Outcome | None = Field(description="Set exactly when final is true.")
    status: BatchStatus | None = Field(description="Normalised status; null when the batch was never observed.")
    provider_status: str | None = Field(description="The provider's raw status string.")
    previous_status: BatchStatus | None = Field(description="The status this command last reported.")
    terminal: bool = Field(description="The batch itself is finished (cancelled, completed, failed, expired).")
    already_terminal: bool = Field(False, description="The batch had finished before the cancel arrived.")
    detail: FailureDetail | None = Field(None, description="Why, for rejected, gave_up and invalid.")
    observed_at: AwareDatetime = Field(description="When the worker saw this state (RFC 3339, UTC).")
    created_at: UnixSeconds = None
    in_progress_at: UnixSeconds = None
    expires_at: UnixSeconds = None
    finalizing_at: UnixSeconds = None
    completed_at: UnixSeconds = None
    failed_at: UnixSeconds = None
    expired_at: UnixSeconds = None
    cancelling_at: UnixSeconds = None
    cancelled_at: UnixSeconds = None
    request_counts: RequestCounts | None = None
    errors: list[BatchError] = Field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.final != (self.outcome is not None):
            raise ValueError("outcome must be set exactly when final is true")
        if (self.outcome in FAILURE_OUTCOMES) != (self.detail is not None):
            raise ValueError("detail must be set exactly for rejected, gave_up and invalid outcomes")
        if self.terminal != (self.status is not None and self.status.terminal):
            raise ValueError("terminal must say whether status is terminal")
        if self.outcome is not Outcome.INVALID and None in (self.provider, self.account, self.batch_id):
            raise ValueError("provider, account and batch_id may be null only in an invalid event")
        if self.outcome in _TERMINAL_OUTCOMES and (self.status is None or self.status.value != self.outcome.value):
            raise ValueError("a terminal outcome must equal the status")
        return self

    @property
    def key(self) -> str | None:
        if self.provider is None or self.account is None or self.batch_id is None:
            return None
        return batch_key(self.provider, self.account, self.batch_id)


def _event_id(command_id: str, key: str | None, what: str) -> str:
    """Same command, same batch and same observed state (or same outcome) give the same id, on any worker."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, "\x1f".join((command_id, key or "", what))))


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no place on the wire; pass an aware one")
    return at.astimezone(UTC)


def state_event(
    command: CancelCommand,
    snapshot: BatchSnapshot,
    previous: BatchStatus | None,
    *,
    final: bool,
    already_terminal: bool = False,
    observed_at: datetime | None = None,
) -> BatchStateEvent:
    """An observed state; ``final`` makes it the command's outcome (the terminal state, or ``accepted``)."""
    outcome = (Outcome(snapshot.status.value) if snapshot.terminal else Outcome.ACCEPTED) if final else None
    what = f"final\x1f{outcome}" if outcome else f"state\x1f{snapshot.status}\x1f{snapshot.provider_status}"
    return BatchStateEvent(
        event_id=_event_id(command.command_id, command.key, what),
        command_id=command.command_id,
        provider=command.provider,
        account=command.account,
        batch_id=command.batch_id,
        final=final,
        outcome=outcome,
        status=snapshot.status,
        provider_status=snapshot.provider_status,
        previous_status=previous,
        terminal=snapshot.terminal,
        already_terminal=already_terminal,
        observed_at=_utc(observed_at),
        **{name: getattr(snapshot, name) or None for name in _TIMESTAMPS},
        request_counts=snapshot.request_counts,
        errors=snapshot.errors,
        output_file_id=snapshot.output_file_id,
        error_file_id=snapshot.error_file_id,
        model=snapshot.model,
        usage=snapshot.usage,
    )


def failure_event(
    *,
    command_id: str,
    outcome: Outcome,
    detail: FailureDetail,
    provider: str | None,
    account: str | None,
    batch_id: str | None,
    last_status: BatchStatus | None = None,
    observed_at: datetime | None = None,
) -> BatchStateEvent:
    """The final event of a command that did not end in a batch state: rejected, gave_up or invalid."""
    if outcome not in FAILURE_OUTCOMES:
        raise ValueError(f"{outcome} is not a failure outcome")
    key = None if None in (provider, account, batch_id) else f"{provider}/{account}/{batch_id}"
    return BatchStateEvent(
        event_id=_event_id(command_id, key, f"final\x1f{outcome}"),
        command_id=command_id,
        provider=provider,
        account=account,
        batch_id=batch_id,
        final=True,
        outcome=outcome,
        status=last_status,
        provider_status=None,
        previous_status=last_status,
        terminal=last_status is not None and last_status.terminal,
        detail=detail,
        observed_at=_utc(observed_at),
    )


def encode_event(event: BatchStateEvent) -> bytes:
    """Compact UTF-8 JSON with every field present, so consumers never tell "absent" from "null"."""
    return event.model_dump_json().encode()


def event_key(event: BatchStateEvent) -> bytes | None:
    return None if event.key is None else event.key.encode()


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_headers(
    event: BatchStateEvent, *, source: str, extra: Sequence[tuple[str, bytes]] = ()
) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 Kafka binary-mode headers; ``extra`` (``traceparent``…) is appended after them.

    Two extension attributes, ``commandid`` and (final events) ``outcome``, let a Knative trigger or a
    consumer filter on headers without parsing the value.
    """
    headers = {
        "ce_specversion": "1.0",
        "ce_id": event.event_id,
        "ce_source": source,
        "ce_type": CE_TYPE_FINAL if event.final else CE_TYPE_STATE,
        "ce_time": _rfc3339(event.observed_at),
        "ce_subject": event.key,
        "ce_commandid": event.command_id,
        "ce_outcome": event.outcome.value if event.outcome else None,
        "content-type": "application/json",
    }
    clash = {name for name, _ in extra} & headers.keys()
    if clash:
        raise ValueError(f"extra headers would shadow CloudEvents headers: {sorted(clash)}")
    ours = [(name, value.encode()) for name, value in headers.items() if value is not None]
    return ours + list(extra)


def dead_letter_headers(
    original_headers: Sequence[tuple[str, bytes]],
    *,
    reason: DeadLetterReason,
    message: str,
    topic: str,
    partition: int,
    offset: int,
    at: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """The record's own headers untouched, then Kafka Connect's DLQ context headers, then ours.

    Connect's names let existing DLQ tooling read our records; a record dead-lettered twice (replayed from
    the DLQ) carries both sets, and the last occurrence of a header name is the newest.
    """
    text = _bounded(message)
    ours = {
        "__connect.errors.topic": topic,
        "__connect.errors.partition": str(partition),
        "__connect.errors.offset": str(offset),
        "__connect.errors.exception.class.name": f"{InvalidCommand.__module__}.{InvalidCommand.__qualname__}",
        "__connect.errors.exception.message": f"{reason.value}: {text}",
        DLQ_REASON_HEADER: reason.value,
        DLQ_MESSAGE_HEADER: text,
        DLQ_TIME_HEADER: _rfc3339(_utc(at)),
    }
    return list(original_headers) + [(name, value.encode()) for name, value in ours.items()]


class InvalidCommand(Exception):
    """A command the worker will not act on; it is dead-lettered and, if ``command_id`` is known, answered."""

    def __init__(
        self,
        reason: DeadLetterReason,
        message: str,
        *,
        command_id: str | None = None,
        partial: Mapping[str, str] | None = None,
    ) -> None:
        self.reason = reason
        self.message = _bounded(message)
        self.command_id = command_id
        self.partial: dict[str, str] = dict(partial or {})
        super().__init__(f"{reason.value}: {self.message}")


# A lone surrogate can only arrive as a \\uD8xx-style escape; only then is the slower check worth running.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_BATCH_ID_LOCS = {("batch_id",), ("data", "batch_id")}


def decode_command(value: bytes | None, *, max_bytes: int) -> CancelCommand:
    """Bytes from the commands topic to a command, or ``InvalidCommand`` — never any other exception.

    The value is parsed twice on purpose: first by ``json`` to refuse what JSON forbids but Python tolerates
    (``NaN``, duplicate keys, which different parsers resolve differently) and to salvage ``command_id``
    for the ``invalid`` event; then by pydantic in strict mode against the model.
    """
    if not value:
        raise InvalidCommand(DeadLetterReason.INVALID_JSON, "the record has no value")
    if len(value) > max_bytes:
        raise InvalidCommand(DeadLetterReason.TOO_LARGE, f"value is {len(value)} bytes; the limit is {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCommand(DeadLetterReason.INVALID_ENCODING, f"value is not UTF-8 (byte {exc.start})") from None
    parsed = _parse_json(text)
    if not isinstance(parsed, dict):
        raise InvalidCommand(DeadLetterReason.SCHEMA_VIOLATION, f"value must be a JSON object, not {_kind(parsed)}")
    enveloped = "specversion" in parsed
    body = parsed.get("data") if enveloped else parsed
    command_id, partial = _salvage(body)
    if enveloped and "data_base64" in parsed:
        raise InvalidCommand(
            DeadLetterReason.SCHEMA_VIOLATION, "CloudEvent data_base64 is not accepted; put the command in data"
        )
    try:
        if enveloped:
            return CommandCloudEvent.model_validate_json(text, strict=True).data
        return CancelCommand.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise InvalidCommand(_reason(exc), _explain(exc), command_id=command_id, partial=partial) from None
    except RecursionError:
        raise InvalidCommand(
            DeadLetterReason.INVALID_JSON, "JSON is nested too deeply", command_id=command_id
        ) from None


def _parse_json(text: str) -> Any:
    try:
        parsed = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_not_json)
    except RecursionError:
        raise InvalidCommand(DeadLetterReason.INVALID_JSON, "JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, integers beyond Python's digit limit
        raise InvalidCommand(DeadLetterReason.INVALID_JSON, f"not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) and not _all_unicode(parsed):
        raise InvalidCommand(DeadLetterReason.INVALID_ENCODING, "a \\u escape encodes a lone UTF-16 surrogate")
    return parsed


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:64]!r}")
        result[key] = item
    return result


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _all_unicode(root: Any) -> bool:
    """Iterative, not recursive: the input may be nested as deeply as ``json`` allowed."""
    stack = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _salvage(body: Any) -> tuple[str | None, dict[str, str]]:
    """What an ``invalid`` event can still say: a well-formed command_id and short raw names."""
    if not isinstance(body, dict):
        return None, {}
    raw_id = body.get("command_id")
    command_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 128 else None
    fields = {**({"account": "default"} if "account" not in body else {}), **body}
    partial = {
        name: fields[name]
        for name in ("provider", "account", "batch_id")
        if isinstance(fields.get(name), str) and len(fields[name]) <= MAX_ECHO_CHARS
    }
    return command_id, partial


def _reason(exc: ValidationError) -> DeadLetterReason:
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return DeadLetterReason.INVALID_JSON
    if tuple(first["loc"]) in _BATCH_ID_LOCS and first["type"] != "missing":
        return DeadLetterReason.INVALID_BATCH_ID
    return DeadLetterReason.SCHEMA_VIOLATION


def _explain(exc: ValidationError) -> str:
    """One clause per problem, naming the field; input values are left out, they may be hostile or huge."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False)[:5]:
        where = ".".join(str(p)[:64] for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
