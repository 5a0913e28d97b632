"""Batch-state events: the value a consumer reads, its deterministic id, and its CloudEvents binary-mode headers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from worker.contract.command import CancelCommand
from worker.contract.types import (
    _TERMINAL_OUTCOMES,
    FAILURE_OUTCOMES,
    MAX_ECHO_CHARS,
    TERMINAL_STATUSES,
    TIMESTAMP_FIELDS,
    BatchError,
    BatchSnapshot,
    BatchStatus,
    CommandId,
    Outcome,
    RequestCounts,
    _bounded,
    batch_key,
)

CE_TYPE_STATE = "io.batch-cancel-worker.batch.state"
CE_TYPE_FINAL = "io.batch-cancel-worker.batch.final"
# A fixed namespace, so event ids are the same on every worker and after every restart.
_EVENT_ID_NAMESPACE = uuid.UUID("8f4a3c52-6d1e-5b7a-9c0e-2f61b5d4a7e3")


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
    return observed_event(
        command.command_id,
        command.provider,
        command.account,
        command.batch_id,
        snapshot,
        previous,
        final=final,
        already_terminal=already_terminal,
        observed_at=observed_at,
    )


def observed_event(  # noqa: PLR0917 - the four fields of a command, then state_event's own
    command_id: str,
    provider: str,
    account: str,
    batch_id: str,
    snapshot: BatchSnapshot,
    previous: BatchStatus | None,
    *,
    final: bool,
    already_terminal: bool = False,
    observed_at: datetime | None = None,
) -> BatchStateEvent:
    """``state_event`` from the command's fields: a follow keeps those strings, not a command model."""
    outcome = (Outcome(snapshot.status.value) if snapshot.terminal else Outcome.ACCEPTED) if final else None
    what = f"final\x1f{outcome}" if outcome else f"state\x1f{snapshot.status}\x1f{snapshot.provider_status}"
    return BatchStateEvent(
        event_id=_event_id(command_id, batch_key(provider, account, batch_id), what),
        command_id=command_id,
        provider=provider,
        account=account,
        batch_id=batch_id,
        final=final,
        outcome=outcome,
        status=snapshot.status,
        provider_status=snapshot.provider_status,
        previous_status=previous,
        terminal=snapshot.terminal,
        already_terminal=already_terminal,
        observed_at=_utc(observed_at),
        **{name: getattr(snapshot, name) or None for name in TIMESTAMP_FIELDS},
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
    key = None if provider is None or account is None or batch_id is None else batch_key(provider, account, batch_id)
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
