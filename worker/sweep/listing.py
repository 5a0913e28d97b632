"""Walk every page of an account's batch list and keep what matches, within the account's request budget.

The provider client does the per-page work (its server-side filters, our own check, the budget at list
priority, retries); this module only walks: it follows cursors to the end, drops a batch listed twice (a
batch created while we list can shift offset-like cursors), keeps at most ``keep`` matches in memory while
counting all of them (a guard must report the true count), and stops on a cursor that does not advance or
after ``MAX_PAGES``, because a provider bug must not become an endless loop that spends the budget.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from worker.errors import Rejected
from worker.providers.listing import ListedBatch, ListFilter, ListPage

__all__ = ["MAX_PAGES", "PAGE_SIZE", "Lister", "ListingClient", "Sweep", "walk"]

#: 100 is the largest page OpenAI-style lists accept; dialects with a smaller cap clamp it themselves.
PAGE_SIZE = 100
#: 1,000 pages of 100 is ten times the largest selector we may expand: beyond it the list is broken, not big.
MAX_PAGES = 1000


class Lister(Protocol):
    """``worker.providers.ProviderClient`` as a sweep sees it."""

    async def list_page(
        self, account: str, f: ListFilter, cursor: str | None, *, page_size: int = PAGE_SIZE
    ) -> ListPage: ...


class ListingClient(Lister, Protocol):
    """A provider client as selectors use it: list pages, refuse a criterion it cannot evaluate, and say the
    account's request budget (children are published at a pace it can cancel)."""

    def check_filter(self, f: ListFilter) -> None: ...
    def request_budget(self, account: str) -> float: ...


@dataclass
class Sweep:
    """What one walk over the list found."""

    skip: Collection[str] = ()
    pages: int = 0
    listed: int = 0
    matched: int = 0
    #: Matches not in ``skip`` (batches an earlier sweep of a standing kill already published a cancel for).
    fresh: int = 0
    batches: list[ListedBatch] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)

    def add(self, page: ListPage, keep: int) -> None:
        self.pages += 1
        self.listed += page.listed
        for batch in page.batches:
            if batch.batch_id in self._seen:
                continue
            self._seen.add(batch.batch_id)
            self.matched += 1
            if batch.batch_id in self.skip:
                continue
            self.fresh += 1
            if len(self.batches) < keep:
                self.batches.append(batch)


async def walk(
    lister: Lister,
    account: str,
    f: ListFilter,
    *,
    keep: int,
    skip: Collection[str] = (),
    on_page: Callable[[Sweep], Awaitable[None]] | None = None,
) -> Sweep:
    """Every page, in the provider's order; ``on_page`` sees the running totals after each page."""
    sweep = Sweep(skip=skip)
    cursor: str | None = None
    while True:
        page = await lister.list_page(account, f, cursor)
        sweep.add(page, keep)
        if on_page is not None:
            await on_page(sweep)
        if page.next_cursor is None:
            return sweep
        if page.next_cursor == cursor or sweep.pages >= MAX_PAGES:
            why = "did not advance" if page.next_cursor == cursor else f"still had more after {MAX_PAGES} pages"
            raise Rejected(None, "list_not_ending", f"the provider's batch list {why}; nothing was cancelled")
        cursor = page.next_cursor
