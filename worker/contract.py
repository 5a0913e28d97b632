"""The public contract: cancel command in, batch-state events out, dead letters aside.

These pydantic models are the single source of truth; ``schemas/*.schema.json`` are generated from them
(``python -m worker.schemagen``) so that publishers in any language can validate without reading Python.

Design choices that a publisher will notice:

* **Unknown fields in a command are rejected**, not ignored. A cancel command is a powerful message: if a
  future version adds, say, ``dry_run: true`` and an older worker silently ignored it, that worker would
  cancel for real. A new optional field therefore ships together with a new ``schema_version``.
* ``batch_id`` goes into a URL path, so it is held to a conservative pattern (no ``/``, ``%``, ``?``, ``#``,
  ``..``, whitespace or control characters) before anything else looks at it.
* Provider timestamps are normalised to Unix seconds or ``null``: DashScope's ``0`` and an absent field both
  mean "has not happened".
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "BATCH_ID_PATTERN",
    "NAME_PATTERN",
    "TERMINAL_STATUSES",
    "BatchError",
    "BatchSnapshot",
    "BatchStatus",
    "CancelCommand",
    "RequestCounts",
    "batch_key",
]

#: Conservative on purpose: every provider id seen (``batch_abc123``, ``batch_rdyqgrcgjg``, UUIDs) fits.
BATCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$"
#: Provider and account names are the operator's own configuration keys.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


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


def _no_dot_dot(value: str) -> str:
    if ".." in value:
        raise ValueError("must not contain '..'")
    return value


BatchId = Annotated[
    str, StringConstraints(pattern=BATCH_ID_PATTERN), AfterValidator(_no_dot_dot), Field(examples=["batch_abc123"])
]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


def batch_key(provider: str, account: str, batch_id: str) -> str:
    """The Kafka key for commands and events: every record about one batch lands on one partition, in order."""
    return f"{provider}/{account}/{batch_id}"


class CancelCommand(BaseModel):
    """Ask the worker to cancel one batch and (by default) follow it until it is terminal."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="CancelCommand")

    schema_version: Literal[1] = Field(1, description="Contract version; bumped when a field is added.")
    command_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="The publisher's idempotency key (a UUID is recommended); echoed in every event."
    )
    provider: Name = Field(description="A provider name the operator configured, never a URL.")
    account: Name = Field("default", description="A credential name configured under that provider.")
    batch_id: BatchId
    reason: Annotated[str, StringConstraints(max_length=1024)] | None = None
    requested_by: Annotated[str, StringConstraints(max_length=256)] | None = None
    requested_at: datetime | None = Field(None, description="RFC 3339 time the publisher asked for the cancel.")
    follow: bool = Field(True, description="Follow the batch to a terminal state (false: report the cancel reply).")
    follow_timeout_s: float | None = Field(
        None, gt=0, le=7 * 24 * 3600, description="Stop following after this long; the worker's own cap still applies."
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=16)

    @property
    def key(self) -> str:
        return batch_key(self.provider, self.account, self.batch_id)


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
