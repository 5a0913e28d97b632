"""The guard's decision, pure: running spend per team, and which batches to cancel when it crosses a budget.

Kept free of Kafka so the rule ("crossing the budget cancels every batch of that team seen so far, and
any batch it starts afterwards") is unit-tested on its own. Money is summed as ``Decimal``: a float sum of
many small costs drifts, and a guard that fires one cent late or early is a guard nobody trusts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from worker.contract import batch_key

__all__ = ["BatchRef", "Ledger", "SpendEvent"]


class SpendEvent(BaseModel):
    """One usage record for one batch; several may arrive per batch as it runs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    team: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    provider: str
    account: str = "default"
    batch_id: str
    cost_usd: Decimal = Field(ge=0, allow_inf_nan=False)


@dataclass(frozen=True, order=True)
class BatchRef:
    provider: str
    account: str
    batch_id: str

    @property
    def key(self) -> str:
        return batch_key(self.provider, self.account, self.batch_id)


@dataclass
class Ledger:
    """``budgets`` per team; ``default_budget`` for teams not listed (``None``: such teams are never cut off)."""

    budgets: Mapping[str, Decimal]
    default_budget: Decimal | None = None
    spent: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    batches: dict[str, set[BatchRef]] = field(default_factory=lambda: defaultdict(set))
    cancelled: set[BatchRef] = field(default_factory=set)

    def budget(self, team: str) -> Decimal | None:
        return self.budgets.get(team, self.default_budget)

    def over_budget(self, team: str) -> bool:
        budget = self.budget(team)
        return budget is not None and self.spent[team] > budget

    def record(self, event: SpendEvent) -> list[BatchRef]:
        """Add the cost; return the batches to cancel now (each batch is returned at most once)."""
        self.spent[event.team] += event.cost_usd
        self.batches[event.team].add(BatchRef(event.provider, event.account, event.batch_id))
        if not self.over_budget(event.team):
            return []
        due = sorted(self.batches[event.team] - self.cancelled)
        self.cancelled.update(due)
        return due
