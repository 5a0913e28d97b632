"""Selector commands: cancel every batch of one account that matches, once or as a standing kill, and lift one.

A budget guard knows the team or the account that overspends, not the ids of its running batches. A selector
names an account and criteria; the worker lists the account's batches, matches them and publishes one ordinary
cancel command per match (a *child*), so one cancel per batch, durable follows and exactly one final per
command come from the machinery every cancel already uses.

Rules a publisher will notice:

* **A selector never spans accounts**: ``provider`` and ``account`` are required, there is no default account.
* ``reason`` and ``requested_by`` are required: a mass cancel must say why and who (the children carry both).
* ``max_batches`` (default 100, at most ``MAX_BATCHES_CAP``) is a guard, not a limit: when more batches match,
  the command ends ``rejected`` with the count and **nothing** is cancelled. Cancelling "the first 100" of a
  larger set would be an arbitrary choice nobody asked for.
* ``dry_run`` lists and matches, then ends ``previewed`` with the matches; nothing is cancelled.
* ``until`` makes it a **standing kill**: besides what matches now, batches that start matching later are
  cancelled at every sweep (every ``sweep_interval_s``) until ``until`` passes or a ``LiftCommand`` ends it.
  ``until`` must lie in the future and at most ``MAX_KILL_S`` ahead; that is checked when the worker takes the
  command in (``check_until``), because a schema cannot know the time.
* A criterion the provider cannot evaluate is refused (``invalid``, naming the provider and the field), never
  silently treated as "matches everything" or "matches nothing".
* Selectors and lifts are keyed ``provider/account/*`` (``selector_key``): every selector and lift of one account
  lands on one partition, so a lift reaches the worker that owns the kill it ends. ``*`` cannot occur in a batch
  id, so the key never collides with a batch's.

Each child's ``command_id`` is derived from the selector's and the batch's key (``child_command_id``), so a
selector expanded twice (a crash mid-expansion) publishes the same children again, and the follow engine's
one-follow-per-batch and per-command bookkeeping absorb the repeat.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from worker.contract.types import BatchStatus, CommandId, MetadataKey, MetadataValue, Name, batch_key

__all__ = [
    "DEFAULT_MAX_BATCHES",
    "DEFAULT_STATUSES",
    "DEFAULT_SWEEP_INTERVAL_S",
    "KIND_LIFT",
    "KIND_SELECTOR",
    "MAX_BATCHES_CAP",
    "MAX_KILL_S",
    "MAX_SWEEP_INTERVAL_S",
    "MIN_SWEEP_INTERVAL_S",
    "PARENT_METADATA_KEY",
    "Criteria",
    "LiftCommand",
    "SelectableStatus",
    "SelectorCommand",
    "check_until",
    "child_command_id",
    "selector_key",
]

#: The metadata key of a selector's child that names its selector (and marks it as one: its cancel is sent at
#: bulk priority, behind plain cancels).
PARENT_METADATA_KEY = "bcw.parent"
KIND_SELECTOR = "cancel_matching"
KIND_LIFT = "lift_kill"
#: The guard's default: most budget kills hit a handful of batches; a hundred is already an incident.
DEFAULT_MAX_BATCHES = 100
#: The hard cap on ``max_batches``: one selector publishes at most this many children.
MAX_BATCHES_CAP = 10_000
#: A standing kill re-lists the account this often by default; bounded both ways so that it neither hammers
#: the provider's list endpoint nor leaves a new batch billing for hours.
DEFAULT_SWEEP_INTERVAL_S = 60.0
MIN_SWEEP_INTERVAL_S = 10.0
MAX_SWEEP_INTERVAL_S = 3600.0
#: The longest a standing kill may stand: a budget period of a month, plus a day of slack.
MAX_KILL_S = 32 * 24 * 3600

#: What a selector may ask for: the states a cancel can still change. ``cancelling`` is allowed (re-sending a
#: cancel is harmless) but not a default; terminal states and ``unknown`` are not selectable.
SelectableStatus = Literal["validating", "queued", "in_progress", "finalizing", "cancelling"]
#: Every non-terminal state except ``cancelling``: what "stop everything that runs" means.
DEFAULT_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.VALIDATING, BatchStatus.QUEUED, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING}
)

_CHILD_NAMESPACE = uuid.UUID("3b0f1c7e-52a4-5d8e-a1f6-94c2d7e08b31")
Text = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class Criteria(BaseModel):
    """What a batch must have to match; every criterion given must hold. Absent criteria do not constrain."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="SelectorCriteria")

    statuses: list[SelectableStatus] | None = Field(
        None,
        min_length=1,
        max_length=5,
        description="Statuses to match; default: validating, queued, in_progress and finalizing.",
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict, max_length=16, description="Pairs the batch's metadata (labels, tags) must all have."
    )
    created_after: AwareDatetime | None = Field(None, description="Only batches created at or after this time.")
    created_before: AwareDatetime | None = Field(None, description="Only batches created before this time.")
    model: Text | None = Field(None, description="The batch's model, exactly as the provider reports it.")
    endpoint: Text | None = Field(None, description="The batch's endpoint (OpenAI style, e.g. /v1/chat/completions).")
    name_prefix: Text | None = Field(None, description="For providers whose batches have names (display names).")

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.created_after and self.created_before and self.created_after >= self.created_before:
            raise ValueError("created_after must be earlier than created_before")
        return self

    def wanted_statuses(self) -> frozenset[BatchStatus]:
        return DEFAULT_STATUSES if self.statuses is None else frozenset(BatchStatus(s) for s in self.statuses)


class SelectorCommand(BaseModel):
    """Cancel every batch of one account that matches ``match`` (or preview them, or keep cancelling them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="SelectorCommand")

    kind: Literal["cancel_matching"] = Field(description="Tells a selector from a cancel command (which has none).")
    schema_version: Literal[1] = 1
    command_id: CommandId = Field(description="Idempotency key; the children's ids are derived from it.")
    provider: Name = Field(description="A configured provider name.")
    account: Name = Field(description="A configured account of that provider; required, never a default.")
    match: Criteria = Field(default_factory=Criteria, description="Which batches; every criterion must hold.")
    reason: Reason = Field(description="Why; copied into every child command.")
    requested_by: Text = Field(description="Who (a person or a service); copied into every child command.")
    requested_at: AwareDatetime | None = None
    dry_run: bool = Field(False, description="List and match only: the final event previews the matches.")
    max_batches: int = Field(
        DEFAULT_MAX_BATCHES,
        ge=1,
        le=MAX_BATCHES_CAP,
        description="More matches than this end the command rejected, with the count, and cancel nothing.",
    )
    until: AwareDatetime | None = Field(
        None, description="A standing kill: keep cancelling new matches until then (at most 32 days ahead)."
    )
    sweep_interval_s: float = Field(
        DEFAULT_SWEEP_INTERVAL_S,
        ge=MIN_SWEEP_INTERVAL_S,
        le=MAX_SWEEP_INTERVAL_S,
        description="How often a standing kill lists the account again.",
    )
    follow: bool = Field(True, description="Passed to every child: follow each batch to its end.")

    @model_validator(mode="after")
    def _preview_does_not_stand(self) -> Self:
        if self.dry_run and self.until is not None:
            raise ValueError("dry_run previews once; it cannot stand until a time (drop until or dry_run)")
        return self

    @property
    def key(self) -> str:
        return selector_key(self.provider, self.account)

    @property
    def standing(self) -> bool:
        return self.until is not None


class LiftCommand(BaseModel):
    """End a standing kill before its ``until``; its own final says whether there was one to end."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="LiftCommand")

    kind: Literal["lift_kill"]
    schema_version: Literal[1] = 1
    command_id: CommandId
    provider: Name
    account: Name
    kill_id: CommandId = Field(description="The command_id of the selector command that started the kill.")
    reason: Reason
    requested_by: Text
    requested_at: AwareDatetime | None = None

    @property
    def key(self) -> str:
        return selector_key(self.provider, self.account)


def selector_key(provider: str, account: str) -> str:
    """The Kafka key of selector and lift commands (and of their events): one partition per account."""
    return batch_key(provider, account, "*")


def child_command_id(selector_id: str, provider: str, account: str, batch_id: str) -> str:
    """The same selector and batch give the same child id on every worker and every attempt (36 characters
    behind a ``sel-`` prefix, so a child never exceeds the command id limit whatever the parent's length)."""
    return "sel-" + str(
        uuid.uuid5(_CHILD_NAMESPACE, "\x1f".join((selector_id, batch_key(provider, account, batch_id))))
    )


def check_until(command: SelectorCommand, now: datetime) -> str | None:
    """Why ``until`` cannot be taken now (in the past, or beyond the cap), or None when it can."""
    if command.until is None:
        return None
    if command.until <= now:
        return f"until {command.until.isoformat()} has already passed"
    if command.until - now > timedelta(seconds=MAX_KILL_S):
        return f"until is more than {MAX_KILL_S // 86400} days ahead; a standing kill may stand at most that long"
    return None
