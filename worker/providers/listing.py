"""Placeholder of the listing interface (the listing branch brings the real module); replaced on merge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from worker.contract import BatchStatus

Criterion = Literal["statuses", "created_after", "created_before", "model", "endpoint", "metadata", "name_prefix"]


@dataclass(frozen=True)
class ListedBatch:
    batch_id: str
    status: BatchStatus
    provider_status: str
    created_at: int | None
    metadata: Mapping[str, str]
    model: str | None
    endpoint: str | None
    name: str | None


@dataclass(frozen=True)
class ListFilter:
    statuses: frozenset[BatchStatus] | None = None
    created_after: int | None = None
    created_before: int | None = None
    model: str | None = None
    endpoint: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    name_prefix: str | None = None


@dataclass(frozen=True)
class ListPage:
    listed: int
    batches: tuple[ListedBatch, ...]
    next_cursor: str | None


class UnsupportedCriterion(Exception):
    def __init__(self, provider: str, criterion: Criterion, why: str) -> None:
        self.provider = provider
        self.criterion = criterion
        super().__init__(f"{provider} cannot evaluate {criterion}: {why}")
