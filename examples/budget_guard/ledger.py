"""The guard's decision, pure: running spend per team, and which accounts to put a standing kill on.

Kept free of Kafka so the rule ("crossing the budget stops every batch of that team on every account it spends
on, and any it starts afterwards, until the budget period ends") is unit-tested on its own. The guard no longer
needs to know batch ids: one standing kill per account, selecting the team's metadata, does it. Money is
summed as ``Decimal``: a float sum of many small costs drifts, and a guard that fires one cent late or early
is a guard nobody trusts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["AccountRef", "Ledger", "SpendEvent"]


class SpendEvent(BaseModel):
    """One usage record for one batch; several may arrive per batch as it runs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    team: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    provider: str
    account: str = "default"
    batch_id: str
    cost_usd: Decimal = Field(ge=0, allow_inf_nan=False)


@dataclass(frozen=True, order=True)
class AccountRef:
    """Where a team spends: the account a standing kill for that team goes on."""

    provider: str
    account: str


@dataclass
class Ledger:
    """``budgets`` per team; ``default_budget`` for teams not listed (``None``: such teams are never cut off)."""

    budgets: Mapping[str, Decimal]
    default_budget: Decimal | None = None
    spent: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    accounts: dict[str, set[AccountRef]] = field(default_factory=lambda: defaultdict(set))
    killed: set[tuple[str, AccountRef]] = field(default_factory=set)

    def budget(self, team: str) -> Decimal | None:
        return self.budgets.get(team, self.default_budget)

    def over_budget(self, team: str) -> bool:
        budget = self.budget(team)
        return budget is not None and self.spent[team] > budget

    def record(self, event: SpendEvent) -> list[AccountRef]:
        """Add the cost; return the accounts to put a kill for this team on now (each at most once)."""
        self.spent[event.team] += event.cost_usd
        self.accounts[event.team].add(AccountRef(event.provider, event.account))
        if not self.over_budget(event.team):
            return []
        due = sorted(a for a in self.accounts[event.team] if (event.team, a) not in self.killed)
        self.killed.update((event.team, a) for a in due)
        return due
