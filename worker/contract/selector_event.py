"""Selector events: a selector's (and a lift's) progress and its one final, on the events topic.

They share the events topic with batch-state events, so a publisher waits for any command's final in one
place, but they are a different record: the CloudEvents type (``ce_type`` header) and ``kind: "selector"`` tell
them apart, and they are keyed ``provider/account/*`` like the selector itself. A consumer that only wants
batch states skips every record whose ``ce_type`` is not a batch one.

A selector's children are ordinary cancel commands: their own batch-state events carry their own finals. The
selector's final lists the children's command ids up to ``MAX_LISTED`` (``children_truncated`` says when there
were more); every child id is ``child_command_id(selector id, provider, account, batch id)``, so the rest can be
recomputed from the batch ids, and each child's ``requested_by``/``reason`` are the selector's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from worker.contract.event import FailureDetail
from worker.contract.selector import selector_key
from worker.contract.types import MAX_ECHO_CHARS, BatchStatus, CommandId, MetadataKey, MetadataValue

__all__ = [
    "CE_TYPE_SELECTOR_FINAL",
    "CE_TYPE_SELECTOR_PROGRESS",
    "MAX_LISTED",
    "MatchedBatch",
    "SelectorEvent",
    "SelectorOutcome",
    "selector_event_headers",
]

CE_TYPE_SELECTOR_PROGRESS = "io.batch-cancel-worker.selector.progress"
CE_TYPE_SELECTOR_FINAL = "io.batch-cancel-worker.selector.final"
#: Children ids and preview rows one event carries; keeps an event well under the publish limit.
MAX_LISTED = 100
_EVENT_ID_NAMESPACE = uuid.UUID("c1d2e3f4-a5b6-5c7d-8e9f-0a1b2c3d4e5f")

Echo = Annotated[str, StringConstraints(max_length=MAX_ECHO_CHARS)]


class SelectorOutcome(StrEnum):
    """How a selector or lift command ended."""

    EXPANDED = "expanded"  # one cancel command published per match (the children end on their own)
    PREVIEWED = "previewed"  # dry run: the matches are listed, nothing was cancelled
    REJECTED = "rejected"  # too many matches, an unknown kill to lift, or the provider refused the list call
    GAVE_UP = "gave_up"  # listing kept failing past the retry budget
    INVALID = "invalid"  # the command was dead-lettered (bad criterion, until in the past, unsigned…)
    ENDED = "ended"  # a standing kill stood until ``until`` or a lift; ``detail.code`` says which
    LIFTED = "lifted"  # a lift command found its kill and ended it


_NEEDS_DETAIL = frozenset({SelectorOutcome.REJECTED, SelectorOutcome.GAVE_UP, SelectorOutcome.INVALID})


class MatchedBatch(BaseModel):
    """One match as a dry run previews it."""

    model_config = ConfigDict(frozen=True)

    batch_id: Echo
    status: BatchStatus
    provider_status: Echo | None = None
    created_at: int | None = None
    model: Echo | None = None
    name: Echo | None = None
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict)


class SelectorEvent(BaseModel):
    """Progress of a selector (pages listed, matched so far; every sweep of a standing kill) or its final."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", title="SelectorEvent", json_schema_serialization_defaults_required=True
    )

    schema_version: Literal[1] = 1
    kind: Literal["selector"] = "selector"
    event_id: str = Field(description="Deterministic UUID: a repeated event carries the same id.")
    command_id: CommandId
    provider: Echo | None = Field(description="Null only in an invalid event whose command did not name one.")
    account: Echo | None
    standing: bool = Field(False, description="The command is a standing kill.")
    dry_run: bool = False
    final: bool
    outcome: SelectorOutcome | None = Field(description="Set exactly when final is true.")
    sweep: int = Field(0, ge=0, description="Which sweep this reports (1 for a one-shot selector).")
    swept: bool = Field(False, description="The sweep is done: its counts are final (false while it still lists).")
    pages: int = Field(0, ge=0, description="List pages read in this sweep.")
    listed: int = Field(0, ge=0, description="Batches the provider listed in this sweep.")
    matched: int = Field(0, ge=0, description="Batches that matched in this sweep.")
    published: int = Field(0, ge=0, description="Child cancel commands published so far (all sweeps).")
    children: list[CommandId] = Field(default_factory=list, max_length=MAX_LISTED)
    children_truncated: bool = Field(False, description="More children than listed in ``children``.")
    matches: list[MatchedBatch] = Field(default_factory=list, max_length=MAX_LISTED)
    detail: FailureDetail | None = Field(None, description="Why, for rejected, gave_up, invalid and ended.")
    observed_at: AwareDatetime

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.final != (self.outcome is not None):
            raise ValueError("outcome must be set exactly when final is true")
        if self.outcome in _NEEDS_DETAIL and self.detail is None:
            raise ValueError("detail must be set for rejected, gave_up and invalid outcomes")
        if self.outcome is not SelectorOutcome.INVALID and None in (self.provider, self.account):
            raise ValueError("provider and account may be null only in an invalid event")
        return self

    @property
    def key(self) -> str | None:
        if self.provider is None or self.account is None:
            return None
        return selector_key(self.provider, self.account)

    @classmethod
    def build(cls, command_id: str, provider: str | None, account: str | None, **fields: Any) -> SelectorEvent:
        """An event whose id follows from what it says, so a repeat after a crash has the same id; a final's id
        follows from the command alone, so a final repeated in a crash window is one event to a consumer."""
        counts = ("sweep", "swept", "pages", "matched", "published")
        what = "final" if fields.get("final") else "\x1f".join(str(fields.get(name, "")) for name in counts)
        event_id = str(uuid.uuid5(_EVENT_ID_NAMESPACE, "\x1f".join((command_id, provider or "", account or "", what))))
        fields.setdefault("observed_at", datetime.now(UTC))
        return cls(event_id=event_id, command_id=command_id, provider=provider, account=account, **fields)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def selector_event_headers(
    event: SelectorEvent, *, source: str, extra: Sequence[tuple[str, bytes]] = ()
) -> list[tuple[str, bytes]]:
    """CloudEvents binary-mode headers, as for batch-state events (``ce_commandid``, ``ce_outcome`` on finals)."""
    headers = {
        "ce_specversion": "1.0",
        "ce_id": event.event_id,
        "ce_source": source,
        "ce_type": CE_TYPE_SELECTOR_FINAL if event.final else CE_TYPE_SELECTOR_PROGRESS,
        "ce_time": _rfc3339(event.observed_at),
        "ce_subject": event.key,
        "ce_commandid": event.command_id,
        "ce_outcome": event.outcome.value if event.outcome else None,
        "content-type": "application/json",
    }
    ours = [(name, value.encode()) for name, value in headers.items() if value is not None]
    return ours + list(extra)
