"""The vocabulary every message shares: statuses, outcomes, reasons, id patterns and the normalised batch."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

#: Conservative on purpose: every provider id seen (``batch_abc123``, ``batch_rdyqgrcgjg``, UUIDs) fits.
BATCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$"
#: Provider and account names are the operator's own configuration keys.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: Messages travel in headers and logs: short, and never the offending input itself beyond a snippet.
MAX_MESSAGE_CHARS = 512
#: Raw provider/account/batch_id strings echoed in an ``invalid`` event are cut off here.
MAX_ECHO_CHARS = 256


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
    UNSUPPORTED_CRITERION = "unsupported_criterion"  # a selector asks what its provider cannot evaluate
    INTERNAL_ERROR = "internal_error"  # the worker failed on this record; replay it once the cause is fixed


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


#: The batch timestamps every dialect reports (Unix seconds), in lifecycle order.
TIMESTAMP_FIELDS = (
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
