"""The shared shape of a provider dialect, and the OpenAI-style parsing most of them reuse.

Most providers speak a near-copy of OpenAI's batch object, so that parsing is written once here and such a
dialect overrides only its quirks (extra status strings, error-body codes); the providers with their own
object (Anthropic, Mistral, Together, xAI) override ``parse_batch`` and reuse the value helpers below.
Parsing is *lenient on values and strict on types*: a timestamp that is ``0`` or neither an integer nor an
RFC 3339 string becomes ``None``, an error entry that is a bare string becomes ``BatchError(message=…)``, an
unknown status becomes ``unknown`` with the raw string kept — but a body that is not a batch object at all
raises ``Retryable`` (a gateway answered, not the API), so nothing a provider sends can raise anything but
our own error types.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from worker.contract import BATCH_ID_PATTERN, TIMESTAMP_FIELDS, BatchError, BatchSnapshot, BatchStatus, RequestCounts
from worker.errors import AlreadyTerminal, ProviderError, Rejected, Retryable
from worker.providers.headers import parse_retry_after
from worker.providers.listing import (
    CRITERIA,
    Criterion,
    ListedBatch,
    ListFilter,
    ListPage,
    Query,
    Support,
    UnsupportedCriterion,
)

__all__ = [
    "OPENAI_LIST_SUPPORT",
    "Dialect",
    "ErrorInfo",
    "Op",
    "decode_body",
    "error_info",
    "finished_at_field",
    "item_id",
    "listed",
    "opt_int",
    "opt_str",
    "page_of",
    "status_of",
    "str_map",
    "timestamp",
]

Op = Literal["cancel", "retrieve", "list"]
_log = logging.getLogger(__name__)
_BATCH_ID = re.compile(BATCH_ID_PATTERN)
#: What an OpenAI-shaped list item carries: status, metadata, created_at, model and endpoint; no name.
OPENAI_LIST_SUPPORT: Mapping[Criterion, Support] = {
    "statuses": "client",
    "created_after": "client",
    "created_before": "client",
    "model": "client",
    "endpoint": "client",
    "metadata": "client",
    "name_prefix": "unsupported",
}

_STATUS = {s.value: s for s in BatchStatus if s is not BatchStatus.UNKNOWN}
_STATUS |= {"canceled": BatchStatus.CANCELLED, "canceling": BatchStatus.CANCELLING}
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
#: How providers word "cannot cancel, the batch is already finished" when they answer 400 instead of 409.
_FINISHED = re.compile(
    r"(cannot|can't|can ?not|unable to) (be )?cancel|not cancell?able|already (been )?"
    r"(completed|cancell?ed|finished|failed|expired)|batch (status|state) (is )?\w+.*cancel",
    re.IGNORECASE,
)
_MAX_MESSAGE = 300


def decode_body(content: bytes) -> object:
    """JSON when it parses (including bare JSON strings like ``"Invalid token"``), else the text itself."""
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class ErrorInfo:
    """The parts of any error body we can act on, whatever shape it came in."""

    code: str | None
    type: str | None
    message: str


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if text.lstrip().startswith("<"):  # an HTML error page from a proxy: keep only its visible words
        text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return text[:_MAX_MESSAGE] or "(empty body)"


def error_info(body: object) -> ErrorInfo:
    """Pull code/type/message out of ``{"error": {...}}``, ``{"code", "message"}``, ``{"detail"}`` or a bare string."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            message = _text(inner.get("message")) or _text(body.get("message")) or json.dumps(inner)[:_MAX_MESSAGE]
            # Anthropic names its spend-limit 429 only in ``error.details.error_code``.
            details = inner.get("details")
            code = _text(inner.get("code")) or (_text(details.get("error_code")) if isinstance(details, dict) else None)
            return ErrorInfo(code, _text(inner.get("type")), _shorten(message))
        detail = body.get("detail")
        found = _text(body.get("message")) or _text(inner) or _text(detail)
        message = found if found is not None else json.dumps(detail if detail is not None else body, default=str)
        return ErrorInfo(_text(body.get("code")), _text(body.get("type")), _shorten(message))
    if isinstance(body, str):
        return ErrorInfo(None, None, _shorten(body))
    return ErrorInfo(None, None, _shorten(json.dumps(body, default=str)))


class Dialect:
    """One provider's API: where it lives, how to authenticate, how to read its answers.

    Subclasses set the class attributes and override ``extra_statuses`` / ``classify_body`` for quirks.
    """

    name: ClassVar[str]
    #: Empty when the provider has no one address (Azure: every resource has its own); config must give one.
    default_base_url: ClassVar[str]
    extra_statuses: ClassVar[Mapping[str, BatchStatus]] = {}
    #: Refusals of a cancel that may mean "already finished" although no provider source says what that answer
    #: looks like: the client then reads the batch once, and only a finished (or finishing) batch turns the
    #: refusal into an outcome; anything else stays rejected. 409 always counts, 400 when its words say so.
    unclear_refusals: ClassVar[frozenset[int]] = frozenset()
    #: False when a successful cancel answers with no batch (``{}`` or an empty body: Gemini, Vertex, Bedrock):
    #: the client then reads the batch once to report the state the cancel left it in.
    cancel_answer_is_batch: ClassVar[bool] = True

    # --- listing (``worker.providers.listing``) ---------------------------------------------------------------
    #: Per criterion: evaluated by the provider's list call, by us from each item, or not at all.
    list_support: ClassVar[Mapping[Criterion, Support]] = OPENAI_LIST_SUPPORT
    #: Why an ``unsupported`` criterion is (the reason ``UnsupportedCriterion`` gives).
    list_unsupported_why: ClassVar[Mapping[Criterion, str]] = {"name_prefix": "its batches have no name"}
    #: The largest page the provider documents (or that its SDK sends); larger requests are cut down to it.
    max_page_size: ClassVar[int] = 100
    #: True when the list is documented newest first: a page that reaches past ``created_after`` is the last.
    newest_first: ClassVar[bool] = False

    def list_path(self) -> str:
        return "/batches"

    def check_filter(self, f: ListFilter) -> None:
        """Raise ``UnsupportedCriterion`` for the first criterion (in ``CRITERIA`` order) nobody can evaluate."""
        for criterion in sorted(f.criteria(), key=_CRITERION_ORDER.__getitem__):
            if self.list_support.get(criterion, "unsupported") == "unsupported":
                why = self.list_unsupported_why.get(criterion, "its batch list items do not carry it")
                raise UnsupportedCriterion(self.name, criterion, why)

    def list_request(self, f: ListFilter, cursor: str | None, page_size: int) -> tuple[str, Query]:
        """The list call's path (relative, like ``retrieve_path``) and query: OpenAI's ``after`` and ``limit``."""
        params: Query = {"limit": str(page_size)}
        if cursor is not None:
            params["after"] = cursor
        return self.list_path(), params

    def parse_list(self, body: object, f: ListFilter, cursor: str | None) -> ListPage:
        """OpenAI's ``{object: list, data, first_id, last_id, has_more}``; a missing ``has_more`` (Groq) ends it."""
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise Retryable(f"answer is not a batch list: {error_info(body).message[:120]}")
        self._carried(body["data"], f)
        items = [self.list_item(item) for item in body["data"]]
        more = body.get("has_more") is True and bool(items)
        last = body.get("last_id") if isinstance(body.get("last_id"), str) else (items[-1].batch_id if items else None)
        return page_of(self, items, f, last if more else None)

    def _carried(self, raw_items: list[Any], f: ListFilter) -> None:
        """Refuse a model or metadata selector when the provider's items have no such field at all.

        OpenAI-compatible APIs configured as ``openai`` differ in what their items carry (Groq's have no
        ``model``; SiliconFlow's and DashScope's documented items show none either). A missing field would
        silently match nothing, so the first item without it turns the selector into a clear refusal instead.
        A field that is present but ``null`` is a batch without a value: it simply does not match.
        """
        for criterion, key in (("model", "model"), ("metadata", "metadata")):
            if criterion in f.criteria() and any(isinstance(i, dict) and key not in i for i in raw_items):
                raise UnsupportedCriterion(
                    self.name, criterion, f"this provider's batch list items carry no {key!r} field"
                )

    def list_item(self, item: object) -> ListedBatch:
        """One OpenAI-shaped item: the dialect's own ``parse_batch`` reads status, times and model."""
        batch_id = item_id(item, "id")
        assert isinstance(item, dict)
        return listed(
            self, item, batch_id, metadata=str_map(item.get("metadata")), endpoint=opt_str(item.get("endpoint"))
        )

    def cancel_path(self, quoted_id: str) -> str:
        return f"/batches/{quoted_id}/cancel"

    def retrieve_path(self, quoted_id: str) -> str:
        return f"/batches/{quoted_id}"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    # --- parsing -------------------------------------------------------------------------------------------
    def parse_batch(self, body: object) -> BatchSnapshot:
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise Retryable(f"answer is not a batch object: {error_info(body).message[:120]}")
        raw: str = body["status"]
        status = status_of(raw, self.extra_statuses)
        fields: dict[str, Any] = {name: timestamp(body.get(name)) for name in TIMESTAMP_FIELDS}
        return BatchSnapshot(
            status=status,
            provider_status=raw[:200],
            request_counts=_counts(body.get("request_counts")),
            errors=_errors(body.get("errors")),
            output_file_id=opt_str(body.get("output_file_id")),
            error_file_id=opt_str(body.get("error_file_id")),
            model=opt_str(body.get("model")),
            usage=body["usage"] if isinstance(body.get("usage"), dict) else None,
            **fields,
        )

    # --- errors --------------------------------------------------------------------------------------------
    def classify(self, status: int, headers: Mapping[str, str], body: object, op: Op) -> ProviderError:
        """Turn one non-2xx answer into Retryable / AlreadyTerminal / Rejected (never raises)."""
        info = error_info(body)
        verdict = self.classify_body(status, info)
        if isinstance(verdict, Retryable) and verdict.retry_after is None:
            return Retryable(verdict.cause, http_status=status, retry_after=parse_retry_after(headers))
        if verdict is not None:
            return verdict
        finished_words = status == 400 and _FINISHED.search(info.message) is not None
        if op == "cancel" and (status == 409 or finished_words or status in self.unclear_refusals):
            return AlreadyTerminal(status, info.message)
        if status == 429 and info.code == "insufficient_quota":
            return Rejected(status, info.code, info.message)
        if status in _RETRYABLE_STATUS:
            return Retryable(
                f"HTTP {status}: {info.message}", http_status=status, retry_after=parse_retry_after(headers)
            )
        return Rejected(status, info.code, info.message)

    def classify_body(self, status: int, info: ErrorInfo) -> ProviderError | None:
        """A dialect's own verdict from the body, before the generic status rules; None = no opinion.

        A ``Retryable`` returned here gets the answer's ``Retry-After`` hint filled in by ``classify``.
        """
        return None


_CRITERION_ORDER = {name: i for i, name in enumerate(CRITERIA)}


def item_id(item: object, key: str) -> str:
    """The id a list item names (``Retryable`` when the item is not an object with one: not a batch list)."""
    value = item.get(key) if isinstance(item, dict) else None
    if not isinstance(value, str) or not value:
        raise Retryable(f"a list item has no {key!r}: the answer is not a batch list")
    return value


def listed(
    dialect: Dialect,
    item: dict[str, Any],
    batch_id: str,
    *,
    metadata: Mapping[str, str] | None = None,
    endpoint: str | None = None,
    name: str | None = None,
    model: str | None = None,
) -> ListedBatch:
    """A list item read by the dialect's own ``parse_batch`` (one status mapping for lists and reads alike).

    An item ``parse_batch`` refuses (no status word) is still listed, as ``unknown``: one odd item must neither
    hide the others nor fail the whole page.
    """
    try:
        snapshot: BatchSnapshot | None = dialect.parse_batch(item)
    except Retryable:
        snapshot = None
    return ListedBatch(
        batch_id=batch_id,
        status=snapshot.status if snapshot is not None else BatchStatus.UNKNOWN,
        provider_status=snapshot.provider_status if snapshot is not None else "",
        created_at=snapshot.created_at if snapshot is not None else None,
        metadata=metadata or {},
        model=model if model is not None else (snapshot.model if snapshot is not None else None),
        endpoint=endpoint,
        name=name,
    )


def page_of(dialect: Dialect, items: Sequence[ListedBatch], f: ListFilter, next_cursor: str | None) -> ListPage:
    """The page's matches; an item whose id could never reach a cancel URL is left out with a warning."""
    matching = []
    for item in items:
        if not f.matches(item):
            continue
        if not _BATCH_ID.fullmatch(item.batch_id) or ".." in item.batch_id:
            _log.warning("%s listed a batch id outside the allowed pattern: %r", dialect.name, item.batch_id[:80])
            continue
        matching.append(item)
    if dialect.newest_first and f.created_after is not None and items:
        oldest = items[-1].created_at
        if oldest is not None and oldest < f.created_after:
            next_cursor = None  # every later page holds older batches still
    return ListPage(listed=len(items), batches=tuple(matching), next_cursor=next_cursor)


def str_map(value: object) -> Mapping[str, str]:
    """A metadata object's string pairs (``null`` and non-string values are nothing we can match)."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def status_of(raw: str, extra: Mapping[str, BatchStatus]) -> BatchStatus:
    """OpenAI's words in any case (Azure's ``Validating``, Together's ``IN_PROGRESS``), then a dialect's own."""
    word = raw.strip().lower()
    return _STATUS.get(word) or extra.get(word, BatchStatus.UNKNOWN)


def timestamp(value: object) -> int | None:
    """Unix seconds from an integer or an RFC 3339 string (Anthropic, Together, Azure's examples); else None."""
    if isinstance(value, str):
        return _rfc3339(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value) or value <= 0 or value > 2**53:  # NaN, DashScope's 0, nonsense
        return None
    return int(value)


def _rfc3339(text: str) -> int | None:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:  # a wall-clock time without a zone names no instant; never guess one
        return None
    return timestamp(parsed.timestamp())


def finished_at_field(status: BatchStatus) -> str | None:
    """Where a provider's single "ended at" time goes: ``cancelled_at`` for a cancelled batch, and so on."""
    return f"{status.value}_at" if status.terminal else None


def opt_str(value: object) -> str | None:
    return value[:512] if isinstance(value, str) else None


def opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _counts(value: object) -> RequestCounts | None:
    if not isinstance(value, dict) or not value:  # SiliconFlow sends null, then {}
        return None
    return RequestCounts(
        total=opt_int(value.get("total")),
        completed=opt_int(value.get("completed")),
        failed=opt_int(value.get("failed")),
    )


def _errors(value: object) -> list[BatchError]:
    """``null``, ``[]``, a list of strings (SiliconFlow's schema) or ``{object: list, data: [...]}``."""
    if isinstance(value, dict):
        value = value.get("data")
    if not isinstance(value, list):
        return []
    out: list[BatchError] = []
    for item in value[:100]:
        if isinstance(item, str):
            out.append(BatchError(message=item[:1000]))
        elif isinstance(item, dict):
            out.append(
                BatchError(
                    code=_text(item.get("code")),
                    message=(_text(item.get("message")) or "")[:1000] or None,
                    param=opt_str(item.get("param")),
                    line=opt_int(item.get("line")),
                )
            )
    return out
