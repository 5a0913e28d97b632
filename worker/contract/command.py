"""The cancel command: its model, its CloudEvents envelope, and the decoder that turns any bytes into a
command or an ``InvalidCommand`` with a dead-letter reason (never anything else)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from worker.contract.selector import KIND_LIFT, KIND_SELECTOR, LiftCommand, SelectorCommand
from worker.contract.types import (
    MAX_ECHO_CHARS,
    BatchId,
    CommandId,
    DeadLetterReason,
    MetadataKey,
    MetadataValue,
    Name,
    _bounded,
    batch_key,
)
from worker.validation import explain


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


#: Anything the commands topic carries: a cancel, a selector, or a lift of a standing kill.
Command = CancelCommand | SelectorCommand | LiftCommand


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
    """Bytes to a cancel command, or ``InvalidCommand``; a selector or lift is refused here (publishers' checks)."""
    command = decode_any(value, max_bytes=max_bytes)
    if not isinstance(command, CancelCommand):
        raise InvalidCommand(
            DeadLetterReason.SCHEMA_VIOLATION,
            f"expected a cancel command, not {command.kind}",
            command_id=command.command_id,
        )
    return command


def decode_any(value: bytes | None, *, max_bytes: int) -> Command:
    """Bytes from the commands topic to a command, or ``InvalidCommand`` — never any other exception.

    ``kind`` tells a selector (``cancel_matching``) or a lift (``lift_kill``) from a cancel command, which has
    none; a CloudEvents envelope may carry only a cancel command.

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
    kind = body.get("kind") if isinstance(body, dict) else None
    model = CancelCommand if kind is None else _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None or (enveloped and model is not CancelCommand):
        where = "in a CloudEvents envelope" if model is not None else f"(known kinds: {', '.join(_MODELS)})"
        raise InvalidCommand(
            DeadLetterReason.SCHEMA_VIOLATION,
            f"kind {str(kind)[:64]!r} is not accepted {where}",
            command_id=command_id,
            partial=partial,
        )
    try:
        if enveloped:
            return CommandCloudEvent.model_validate_json(text, strict=True).data
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise InvalidCommand(_reason(exc), explain(exc, most=5), command_id=command_id, partial=partial) from None
    except RecursionError:
        raise InvalidCommand(
            DeadLetterReason.INVALID_JSON, "JSON is nested too deeply", command_id=command_id
        ) from None


_MODELS: dict[str, type[CancelCommand] | type[SelectorCommand] | type[LiftCommand]] = {
    KIND_SELECTOR: SelectorCommand,
    KIND_LIFT: LiftCommand,
}


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
    if tuple(first["loc"]) in _BATCH_ID_LOCS and first["type"] not in {"missing", "extra_forbidden"}:
        return DeadLetterReason.INVALID_BATCH_ID
    return DeadLetterReason.SCHEMA_VIOLATION
