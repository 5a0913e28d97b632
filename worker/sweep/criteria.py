"""From a selector's criteria (the contract) to a provider's list filter: pure, and where refusals are made."""

from __future__ import annotations

from worker.contract import Criteria
from worker.providers.listing import ListFilter

__all__ = ["to_filter"]


def to_filter(criteria: Criteria) -> ListFilter:
    """Times become Unix seconds (every dialect's ``created_at``); the default statuses are made explicit, so a
    provider's server-side status filter and our own check see exactly the same set."""
    return ListFilter(
        statuses=criteria.wanted_statuses(),
        created_after=int(criteria.created_after.timestamp()) if criteria.created_after else None,
        created_before=int(criteria.created_before.timestamp()) if criteria.created_before else None,
        model=criteria.model,
        endpoint=criteria.endpoint,
        metadata=dict(criteria.metadata),
        name_prefix=criteria.name_prefix,
    )
