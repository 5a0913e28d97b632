"""Listing a provider's batches for a selector: what a selector asks for, what one list page holds, what fails.

A kill switch by selector ("cancel every running batch of team X") needs the ids the publisher never told us,
so it lists the account's batches page by page. Each dialect (``worker.providers.base.Dialect``) says which
criteria its provider evaluates on the server, which we must evaluate on our side from what each list item
carries, and which nobody can evaluate (``list_support``). A criterion nobody can evaluate raises
``UnsupportedCriterion`` before any request: a selector for "metadata team=x" on Anthropic, whose list items
carry no metadata, would otherwise silently match every batch or none.

``ListFilter.matches`` is always applied on our side too, also where the server filtered: a server filter that
is looser than ours (Bedrock's ``nameContains`` for a name prefix, Mistral's status words that cover two of
ours) then still yields exactly what the selector asked for.

Semantics a selector can rely on, whatever the provider:

* ``created_after`` is inclusive, ``created_before`` exclusive (a half-open interval: two selectors on
  adjacent intervals never both match a batch). A batch whose item carries no creation time matches neither.
* ``model`` matches the provider's model string exactly, or its last ``/``-separated part (Gemini's
  ``models/gemini-2.5-flash`` and Vertex's ``projects/…/models/gemini-2.5-flash`` both match
  ``gemini-2.5-flash``).
* ``metadata``: every pair must be present with exactly that value. ``name_prefix``: the batch's display
  name starts with it (case-sensitive).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal, get_args

from worker.contract import BatchStatus
from worker.errors import Rejected

__all__ = [
    "CRITERIA",
    "MAX_CURSOR_CHARS",
    "Criterion",
    "ListFilter",
    "ListPage",
    "ListedBatch",
    "Query",
    "Support",
    "UnsupportedCriterion",
    "checked_cursor",
    "rfc3339",
]

Criterion = Literal["statuses", "created_after", "created_before", "model", "endpoint", "metadata", "name_prefix"]
Support = Literal["server", "client", "unsupported"]
#: A list call's query parameters; a list value repeats the parameter (Mistral's ``status=A&status=B``).
Query = dict[str, str | list[str]]
CRITERIA: tuple[Criterion, ...] = get_args(Criterion)
#: Longest cursor we pass back to a provider. Real ones are far shorter (ids, Google page tokens of a few
#: hundred characters, Bedrock's ``nextToken`` is documented up to 2048); anything longer is not one of theirs.
MAX_CURSOR_CHARS = 4096
#: A cursor is printable ASCII without spaces: every provider's ids and tokens are, and nothing else can smuggle
#: a second query parameter or a header line in (it only ever travels as one query parameter's value anyway).
_CURSOR = re.compile(r"[\x21-\x7e]+")
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class ListedBatch:
    """One item of a provider's batch list, parsed leniently (like ``Dialect.parse_batch``)."""

    batch_id: str
    status: BatchStatus
    provider_status: str
    created_at: int | None  # unix seconds
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # {} when the provider has none
    model: str | None = None
    endpoint: str | None = None
    #: The display name where batches have one (Gemini/Vertex ``displayName``, Bedrock ``jobName``, xAI ``name``).
    name: str | None = None

    def __hash__(self) -> int:  # the metadata mapping is not hashable; equal batches still hash alike
        return hash((self.batch_id, self.status, self.provider_status, self.created_at, self.name))


@dataclass(frozen=True)
class ListFilter:
    """What a selector asks for; ``None`` (or an empty mapping) leaves a criterion out."""

    statuses: frozenset[BatchStatus] | None = None
    created_after: int | None = None  # inclusive
    created_before: int | None = None  # exclusive
    model: str | None = None
    endpoint: str | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    name_prefix: str | None = None

    def __post_init__(self) -> None:
        # A read-only copy: the filter is shared across pages and tasks and must not change under them.
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if self.statuses is not None:
            object.__setattr__(self, "statuses", frozenset(self.statuses))

    def __hash__(self) -> int:  # usable as a key (a standing kill's filter), metadata included
        return hash(
            (
                self.statuses,
                self.created_after,
                self.created_before,
                self.model,
                self.endpoint,
                frozenset(self.metadata.items()),
                self.name_prefix,
            )
        )

    def criteria(self) -> frozenset[Criterion]:
        """The criteria this filter sets (an empty ``statuses`` set counts as set: it matches nothing)."""
        present: dict[Criterion, bool] = {
            "statuses": self.statuses is not None,
            "created_after": self.created_after is not None,
            "created_before": self.created_before is not None,
            "model": self.model is not None,
            "endpoint": self.endpoint is not None,
            "metadata": bool(self.metadata),
            "name_prefix": self.name_prefix is not None,
        }
        return frozenset(name for name, is_set in present.items() if is_set)

    def matches(self, batch: ListedBatch) -> bool:
        """Whether every criterion this filter sets holds for ``batch`` (pure; evaluated on our side)."""
        created = batch.created_at
        return (
            (self.statuses is None or batch.status in self.statuses)
            and (self.created_after is None or (created is not None and created >= self.created_after))
            and (self.created_before is None or (created is not None and created < self.created_before))
            and (self.model is None or _same_model(batch.model, self.model))
            and (self.endpoint is None or batch.endpoint == self.endpoint)
            and all(batch.metadata.get(key) == value for key, value in self.metadata.items())
            and (
                self.name_prefix is None or ((batch.name or "").startswith(self.name_prefix) and batch.name is not None)
            )
        )


def _same_model(have: str | None, want: str) -> bool:
    if have is None:
        return False
    return have == want or have.rsplit("/", 1)[-1] == want


@dataclass(frozen=True)
class ListPage:
    """One page of a provider's list, already filtered."""

    listed: int  # items the provider returned on this page
    batches: tuple[ListedBatch, ...]  # those that match the filter (server filters + ours)
    #: Opaque; pass it back for the next page. None: no more pages (also when newest-first order proves that
    #: no later page can hold a batch created at or after ``created_after``).
    next_cursor: str | None


class UnsupportedCriterion(Exception):
    """A selector criterion the provider cannot evaluate: neither its list call nor its list items allow it."""

    def __init__(self, provider: str, criterion: Criterion, why: str) -> None:
        super().__init__(f"{provider} cannot evaluate {criterion}: {why}")
        self.provider = provider
        self.criterion = criterion
        self.why = why


def checked_cursor(cursor: str | None) -> str | None:
    """A cursor fit to travel back to the provider as one query parameter, or ``Rejected``.

    Cursors come from the provider's own answers (or from a caller who kept one), so they are untrusted input.
    """
    if cursor is None:
        return None
    if len(cursor) > MAX_CURSOR_CHARS or not _CURSOR.fullmatch(cursor):
        raise Rejected(None, "invalid_cursor", f"list cursor is not 1-{MAX_CURSOR_CHARS} printable ASCII characters")
    return cursor


def rfc3339(unix: int) -> str:
    """Unix seconds as the RFC 3339 UTC time the server-side time filters take (``2026-12-03T05:00:00Z``)."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
