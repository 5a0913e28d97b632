"""Emulated batches: a scenario says how each batch misbehaves, the store plays it out request by request.

Faults are consumed in order, one unit per matching request, so "3 overloads, then a 429 with Retry-After,
then success" is one list. A ``drop`` fault is applied *after* the request took effect (the cancel happened,
its answer was lost mid-body): the nastiest case for a client, which must retry without double effects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Attributes", "Batch", "Fault", "Scenario", "Store"]

FaultKind = Literal["overload", "rate_limit", "quota", "server_error", "drop", "slow"]
Terminal = Literal["cancelled", "completed", "failed", "expired"]
TERMINAL = frozenset({"cancelled", "completed", "failed", "expired"})


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    count: int = Field(1, ge=1)
    status: int = Field(500, ge=500, le=599, description="server_error: the 5xx to answer")
    retry_after_s: float | None = Field(None, ge=0, description="rate_limit/overload: Retry-After seconds")
    retry_after_ms: int | None = Field(None, ge=0, description="rate_limit/overload: retry-after-ms")
    retry_after_date: bool = Field(False, description="send retry_after_s as an HTTP date instead")
    delay_s: float = Field(0.0, ge=0, le=600, description="slow: wait this long, then answer normally")


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: str | None = Field(None, description="initial status; default in_progress (SiliconFlow in_queue)")
    faults: list[Fault] = Field(default_factory=list)
    fault_on: Literal["cancel", "retrieve", "both"] = "cancel"
    delay_s: float = Field(0.0, ge=0, le=600, description="every answer about this batch waits this long")
    cancelling_polls: int = Field(1, ge=0, description="GETs that still see cancelling after the cancel")
    cancelling_s: float | None = Field(None, ge=0, description="or: seconds cancelling lasts (wins if set)")
    final: Terminal = "cancelled"
    # Switches for what no provider source settles; tests run both ways so the worker cannot rely on a guess.
    cancelling_shown: bool = Field(
        True,
        description="False: while cancelling, answers still show the status from before the cancel "
        "(Together's current SDK has no CANCELING)",
    )
    finished_answer: Literal["error", "batch"] = Field(
        "error", description="cancel of a finished batch: the dialect's refusal, or 200 with the batch unchanged"
    )
    bedrock_finished: Literal["ValidationException", "ConflictException"] = Field(
        "ValidationException",
        description="bedrock: how a stop of a finished job is refused (undocumented; LiteLLM assumes the first, "
        "AWS documents the second for the stop)",
    )
    doc_example_shape: bool = Field(
        False, description="azure: answer like Microsoft's reference examples (ISO times, 'Validating', null counts)"
    )


@dataclass
class Batch:
    dialect: str
    id: str
    scenario: Scenario
    status: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    times: dict[str, int] = field(default_factory=dict)
    fault_index: int = 0
    fault_used: int = 0
    polls_left: int = 0
    cancelled_mono: float | None = None
    before_cancel: str | None = None
    # What a selector can match (``batch_cancel_emulator.attributes`` renders them in each dialect's fields);
    # None/empty: the dialect's own default rendering.
    metadata: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    endpoint: str | None = None
    name: str | None = None
    seq: int = 0  # creation order: the list's tie-break between batches created in the same second

    @property
    def shown_status(self) -> str:
        """The status an answer shows: the real one, unless the scenario hides the cancelling state."""
        if self.status == "cancelling" and not self.scenario.cancelling_shown and self.before_cancel is not None:
            return self.before_cancel
        return self.status

    def next_fault(self, op: str) -> Fault | None:
        """Consume one unit of the current fault if it applies to ``op`` (cancel/retrieve)."""
        if self.scenario.fault_on not in (op, "both"):
            return None
        faults = self.scenario.faults
        while self.fault_index < len(faults) and self.fault_used >= faults[self.fault_index].count:
            self.fault_index, self.fault_used = self.fault_index + 1, 0
        if self.fault_index >= len(faults):
            return None
        self.fault_used += 1
        return faults[self.fault_index]

    def cancel(self) -> bool:
        """Apply a cancel; False when the batch had already finished (the caller answers 409/400)."""
        if self.status in TERMINAL:
            return False
        if self.status != "cancelling":
            self.before_cancel = self.status
            self.status = "cancelling"
            self.times["cancelling_at"] = int(time.time())
            self.cancelled_mono = time.monotonic()
            self.polls_left = self.scenario.cancelling_polls
        return True

    def cancel_due_mono(self) -> float | None:
        """When (monotonic) a cancel whose end is timed (``cancelling_s``) ends; None when polls end it or
        the batch is not cancelling. A pushing emulator ends the batch then, polled or not."""
        if self.status != "cancelling" or self.scenario.cancelling_s is None or self.cancelled_mono is None:
            return None
        return self.cancelled_mono + self.scenario.cancelling_s

    def retrieve(self) -> None:
        """Advance a cancelling batch by one poll (or by elapsed time) towards its scenario's final state."""
        if self.status != "cancelling":
            return
        if self.scenario.cancelling_s is not None:
            done = time.monotonic() - (self.cancelled_mono or 0.0) >= self.scenario.cancelling_s
        else:
            done = self.polls_left <= 0
            self.polls_left -= 1
        if done:
            self.status = self.scenario.final
            self.times[f"{self.status}_at"] = int(time.time())


class Attributes(BaseModel):
    """What the admin API may set on a batch for listing tests: selectors match on these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    model: str | None = Field(None, max_length=256)
    endpoint: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=256)
    created_at: int | None = Field(None, gt=0, description="unix seconds; default: now")


class Store:
    def __init__(self) -> None:
        self.batches: dict[tuple[str, str], Batch] = {}
        self._seq = 0

    def create(self, dialect: str, batch_id: str, scenario: Scenario, attributes: Attributes | None = None) -> Batch:
        initial = scenario.status or ("in_queue" if dialect == "siliconflow" else "in_progress")
        attrs = attributes or Attributes()
        self._seq += 1
        batch = Batch(
            dialect,
            batch_id,
            scenario,
            initial,
            metadata=dict(attrs.metadata),
            model=attrs.model,
            endpoint=attrs.endpoint,
            name=attrs.name,
            seq=self._seq,
        )
        if attrs.created_at is not None:
            batch.created_at = attrs.created_at
        if initial in TERMINAL:
            batch.times[f"{initial}_at"] = batch.created_at
        elif initial == "cancelling":  # made cancelling: its cancel was asked at creation (xAI shows it)
            batch.times["cancelling_at"] = batch.created_at
        self.batches[(dialect, batch_id)] = batch
        return batch

    def get(self, dialect: str, batch_id: str) -> Batch | None:
        return self.batches.get((dialect, batch_id))
