"""``ProviderClient``: cancel and retrieve one batch, list an account's batches, with retries, budgets and typed errors.

This is the boundary where httpx exceptions and provider answers become ``worker.errors`` types. One client
per configured provider holds one pooled ``httpx.AsyncClient`` and one ``AccountGate`` per account
(``worker.budget``): every attempt, retries included, takes a concurrency slot and a rate token from it in
priority order (a cancel before a list page before any poll), holds the slot only while the request is on
the wire, never during a backoff sleep, and tells it about 429s and quota headers so the account slows
down before it is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import httpx
from opentelemetry.trace import SpanKind

from worker.budget import AccountGate, Priority
from worker.contract import BATCH_ID_PATTERN, BatchSnapshot, BatchStatus
from worker.errors import AlreadyTerminal, Rejected, Retryable
from worker.providers.access import AccountAccess
from worker.providers.base import Dialect, Op, decode_body
from worker.providers.headers import parse_quota
from worker.providers.listing import Criterion, ListFilter, ListPage, Query, Support, checked_cursor
from worker.retry import RetryPolicy, call_with_retry
from worker.telemetry import TRACER, exporting, metrics

__all__ = ["CancelResult", "ProviderClient"]

T = TypeVar("T")
_BATCH_ID = re.compile(BATCH_ID_PATTERN)
#: After a refused cancel, these states mean "the batch is on its way to an end anyway": follow it.
_MOVING_TO_END = frozenset({BatchStatus.CANCELLING, BatchStatus.FINALIZING})


@dataclass(frozen=True)
class CancelResult:
    """The batch as the cancel left it; ``already_terminal`` when it had finished before we asked."""

    snapshot: BatchSnapshot
    already_terminal: bool


class ProviderClient:
    """One configured provider: its dialect, its HTTP client, its accounts' access and concurrency bounds.

    ``access`` is per account (``worker.providers.access``): static key headers, or an ``httpx.Auth`` that
    httpx runs for every attempt (cloud credentials: fresh token, new signature) plus the account's URL prefix.
    """

    def __init__(
        self,
        name: str,
        dialect: Dialect,
        http: httpx.AsyncClient,
        access: Mapping[str, AccountAccess],
        *,
        max_concurrency: int,
        policy: RetryPolicy,
        max_requests_per_s: float = 1_000_000.0,
    ) -> None:
        self.name = name
        self.dialect = dialect.name
        self._dialect = dialect
        self._http = http
        self._base = str(http.base_url)  # httpx keeps a base URL's path with a trailing slash
        self._access = dict(access)
        self.gates = {account: AccountGate(max_concurrency, max_requests_per_s) for account in access}
        self._policy = policy

    async def cancel(self, account: str, batch_id: str, *, priority: Priority = Priority.CANCEL) -> CancelResult:
        """Ask for the cancel; if the batch had already finished, read it once and report that state.

        ``priority`` is ``BULK`` for a selector's child, whose cancel must not hold up a plain one."""
        try:
            snapshot = await self._call(
                "POST", self._dialect.cancel_path, account, batch_id, op="cancel", priority=priority
            )
        except AlreadyTerminal as refused:
            snapshot = await self.retrieve(account, batch_id, priority=priority)
            if snapshot.terminal:
                return CancelResult(snapshot, already_terminal=True)
            if snapshot.status in _MOVING_TO_END:
                return CancelResult(snapshot, already_terminal=False)
            raise Rejected(refused.http_status, None, refused.message) from None
        if snapshot is None:  # the answer held no batch (Gemini, Vertex, Bedrock): read what the cancel left
            snapshot = await self.retrieve(account, batch_id, priority=priority)
        # A 200 that already shows completed/failed/expired means the batch finished before our cancel landed.
        finished_first = snapshot.terminal and snapshot.status is not BatchStatus.CANCELLED
        return CancelResult(snapshot, already_terminal=finished_first)

    async def retrieve(self, account: str, batch_id: str, *, priority: Priority = Priority.POLL) -> BatchSnapshot:
        snapshot = await self._call(
            "GET", self._dialect.retrieve_path, account, batch_id, op="retrieve", priority=priority
        )
        assert snapshot is not None  # only a cancel's answer can hold no batch
        return snapshot

    async def aclose(self) -> None:
        await self._http.aclose()
        for access in self._access.values():
            close = getattr(access.auth, "close", None)  # GoogleTokenAuth keeps a client of its own
            if close is not None:
                close()

    @property
    def list_support(self) -> Mapping[Criterion, Support]:
        """Per selector criterion: evaluated by this provider's list call, on our side, or not at all."""
        return self._dialect.list_support

    def request_budget(self, account: str) -> float:
        """The account's configured requests per second (``max_requests_per_s``): a sweep paces its children by it."""
        return self.gates[account].adaptive.ceiling

    def check_filter(self, f: ListFilter) -> None:
        """Raise ``UnsupportedCriterion`` for a criterion this provider cannot evaluate (no request is made):
        what validating a selector command needs before anything is listed."""
        self._dialect.check_filter(f)

    async def list_page(self, account: str, f: ListFilter, cursor: str | None, *, page_size: int = 100) -> ListPage:
        """One page of the account's batch list, filtered by ``f`` (server side where the provider can, then ours).

        Raises ``UnsupportedCriterion`` (before any request) for a criterion the provider cannot evaluate, and the
        same ``Retryable``/``Rejected`` as a retrieve. Runs at ``Priority.LIST``: after any cancel, before polls.
        """
        self._dialect.check_filter(f)
        cursor = checked_cursor(cursor)
        size = max(1, min(page_size, self._dialect.max_page_size))
        path, params = self._dialect.list_request(f, cursor, size)
        what = f"{self.name} list{' after cursor' if cursor else ''}"
        page = await self._request(
            "GET",
            path,
            account,
            op="list",
            priority=Priority.LIST,
            what=what,
            parse=lambda body: self._dialect.parse_list(body, f, cursor),
            params=params,
            attributes={"bcw.list.page_size": size},
        )
        assert page is not None  # a list answer always parses to a page
        return page

    async def _call(
        self, method: str, path_for: Callable[[str], str], account: str, batch_id: str, *, op: Op, priority: Priority
    ) -> BatchSnapshot | None:
        self._access_for(account)
        # Defence in depth: the contract already validated the id, but it is about to become part of a URL.
        if not _BATCH_ID.fullmatch(batch_id) or ".." in batch_id:
            raise Rejected(None, "invalid_batch_id", "batch id does not match the allowed pattern")
        path = path_for(quote(batch_id, safe=""))
        no_batch = op == "cancel" and not self._dialect.cancel_answer_is_batch
        return await self._request(
            method,
            path,
            account,
            op=op,
            priority=priority,
            what=f"{self.name} {op} {batch_id}",
            parse=(lambda _body: None) if no_batch else self._dialect.parse_batch,
            attributes={"bcw.batch_id": batch_id},
        )

    def _access_for(self, account: str) -> AccountAccess:
        access = self._access.get(account)
        if access is None:
            raise Rejected(None, "unknown_account", f"account {account!r} is not configured for {self.name}")
        return access

    async def _request(
        self,
        method: str,
        path: str,
        account: str,
        *,
        op: Op,
        priority: Priority,
        what: str,
        parse: Callable[[object], T],
        params: Query | None = None,
        attributes: Mapping[str, str | int] | None = None,
    ) -> T:
        """One logical call: every attempt through the account's gate, retried by the policy, inside one span.

        ``path`` is already safe (quoted id, fixed words); ``params`` go through httpx's query encoding only.
        """
        access = self._access_for(account)
        # Absolute URLs: httpx would otherwise parse and re-join a relative path with base_url on every call.
        url = access.url_prefix + path if access.url_prefix else self._base + path.lstrip("/")
        gate = self.gates[account]
        headers, auth = access.headers, access.auth
        listing = op == "list"

        async def attempt() -> T:
            async with gate.enter(priority):
                try:
                    response = await self._http.request(method, url, params=params, headers=headers, auth=auth)
                except httpx.UnsupportedProtocol as exc:
                    raise Rejected(None, "unsupported_protocol", str(exc)) from None
                except httpx.TransportError as exc:  # refused, reset, timed out, cut off mid-body
                    self._count("error", "retryable", listing)
                    raise Retryable(f"{type(exc).__name__}: {exc or 'connection error'}") from None
                except (TimeoutError, OSError) as exc:  # what a transport failed to map
                    self._count("error", "retryable", listing)
                    raise Retryable(f"{type(exc).__name__}: {exc or 'connection error'}") from None
            body = decode_body(response.content)
            remaining, reset = parse_quota(response.headers)
            if remaining is not None:
                gate.quota(remaining, reset)
            if 200 <= response.status_code < 300:
                self._count(str(response.status_code), "ok", listing)
                gate.succeeded()
                return parse(body)
            error = self._dialect.classify(response.status_code, response.headers, body, op)
            if response.status_code == 429:
                metrics.THROTTLED.labels(self.name, account).inc()
                gate.throttled(error.retry_after if isinstance(error, Retryable) else None)
            self._count(str(response.status_code), _RESULTS.get(type(error), "error"), listing)
            raise error

        if not exporting():  # nobody would see the span: skip it (the HTTP spans are skipped the same way)
            return await call_with_retry(attempt, policy=self._policy, what=what, on_retry=self._retried)
        span_attributes = {"bcw.provider": self.name, "bcw.dialect": self.dialect, "bcw.op": op, **(attributes or {})}
        name = "list batches" if listing else f"{op} batch"
        with TRACER.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=span_attributes) as span:

            def on_retry(attempt_number: int, error: BaseException | None, wait_s: float) -> None:
                self._retried(attempt_number, error, wait_s)
                span.add_event("retry", {"attempt": attempt_number, "cause": _cause_label(error), "wait_s": wait_s})

            return await call_with_retry(attempt, policy=self._policy, what=what, on_retry=on_retry)

    def _retried(self, attempt_number: int, error: BaseException | None, wait_s: float) -> None:
        metrics.RETRIES.labels(self.name, _cause_label(error)).inc()

    def _count(self, status: str, result: str, listing: bool = False) -> None:
        metrics.PROVIDER_REQUESTS.labels(self.name, self.dialect, status, result).inc()
        if listing:
            metrics.LIST_REQUESTS.labels(self.name, result).inc()


_RESULTS: dict[type[Exception], str] = {
    Retryable: "retryable",
    Rejected: "rejected",
    AlreadyTerminal: "already_terminal",
}


def _cause_label(error: BaseException | None) -> str:
    """A bounded label for a retry cause: the HTTP status when there was an answer, else ``transport``."""
    status = getattr(error, "http_status", None)
    return f"http_{status}" if isinstance(status, int) else "transport"
