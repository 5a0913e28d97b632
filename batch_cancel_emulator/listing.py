"""Each dialect's batch list: its path, its pagination, its server-side filters, its answer shape.

The sources (``research/selectors-and-push.md`` part A, and each official SDK's pager, which the fidelity
tests run against these answers) say:

* OpenAI shape (OpenAI, Groq by configuration, SiliconFlow, DashScope, DeepInfra, Azure v1 and classic):
  ``GET …/batches?after=&limit=`` (1-100, default 20) → ``{object: list, data, first_id, last_id, has_more}``.
* Anthropic: ``GET /v1/messages/batches?after_id=&before_id=&limit=`` (1-1000, default 20), newest first.
* Mistral: ``GET /v1/batch/jobs?page=&page_size=&status=…&model=&created_after=&order_by=`` →
  ``{object: list, data, total}``; page numbers from 0.
* Together: ``GET /v1/batches`` → a bare JSON array of every batch.
* xAI: ``GET /v1/batches?limit=&pagination_token=`` → ``{batches, pagination_token}`` (proto JSON: an empty
  token or list is left out).
* Gemini API: ``GET /v1beta/batches?pageSize=&pageToken=`` → ``{operations, nextPageToken}``.
* Vertex AI: ``GET …/batchPredictionJobs?pageSize=&pageToken=&filter=`` → ``{batchPredictionJobs,
  nextPageToken}``; the filter grammar is the documented subset (below).
* Bedrock: ``GET /model-invocation-jobs?maxResults=&nextToken=&statusEquals=&submitTimeAfter=&
  submitTimeBefore=&nameContains=&sortBy=&sortOrder=`` → ``{invocationJobSummaries, nextToken}``.

The emulator's own choices where the sources are silent: every list is newest first (documented only for
Anthropic, DashScope and Bedrock's ``sortOrder=Descending``; "commonly observed" for OpenAI); opaque tokens
are keyset cursors (the id of the last item, base64url), so batches created while a client pages never shift
its pages (Mistral's page numbers do shift: that is what page numbers do); default page sizes where none is
documented are 20 (xAI, Gemini, Vertex) and 1000 (Bedrock). Groq's answer has no ``has_more`` in its SDK,
but the emulator answers the OpenAI shape for the ``openai`` dialect, which the Groq SDK's model accepts.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from batch_cancel_emulator import cloud_shapes, native_shapes
from batch_cancel_emulator.model import Batch, Store
from batch_cancel_emulator.shapes import batch_object

__all__ = ["ListAnswer", "answer", "list_dialect"]

ListAnswer = tuple[int, bytes, bytes]
Query = dict[str, list[str]]

#: The list path of every dialect (Vertex: ``VERTEX_PREFIX`` + scope + ``batchPredictionJobs``, see ``app``).
LIST_PATHS = {
    "/openai/v1/batches": "openai",
    "/siliconflow/v1/batches": "siliconflow",
    "/dashscope/compatible-mode/v1/batches": "dashscope",
    "/deepinfra/v1/openai/batches": "deepinfra",
    "/anthropic/v1/messages/batches": "anthropic",
    "/mistral/v1/batch/jobs": "mistral",
    "/azure/openai/v1/batches": "azure",
    "/azure/openai/batches": "azure",  # the classic API (``?api-version=`` required, checked by ``app``)
    "/together/v1/batches": "together",
    "/xai/v1/batches": "xai",
    "/gemini/v1beta/batches": "gemini",
    "/bedrock/model-invocation-jobs": "bedrock",
}
_VERTEX_LIST = re.compile(
    r"/vertex/v1/projects/([a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20})/locations/[a-z]+(-[a-z]+)*[0-9]{0,2}"
    r"/batchPredictionJobs"
)
_OPENAI_LIKE = frozenset({"openai", "siliconflow", "dashscope", "deepinfra", "azure"})


class BadRequest(Exception):
    """A list request the provider would refuse with 400 (a bad page size, cursor or filter)."""


def list_dialect(path: str) -> str | None:
    """The dialect whose list path ``path`` is, else None."""
    if path in LIST_PATHS:
        return LIST_PATHS[path]
    return "vertex" if _VERTEX_LIST.fullmatch(path) else None


def answer(store: Store, dialect: str, query: bytes, scope: tuple[str, str] | None) -> ListAnswer:
    """The list answer for one request: ``(status, body, content type)``."""
    params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    batches = sorted(
        (b for b in store.batches.values() if b.dialect == dialect), key=lambda b: (b.created_at, b.seq), reverse=True
    )
    try:
        body = _LISTERS[dialect](batches, params, scope)
    except BadRequest as bad:
        return 400, json.dumps(_bad_request(dialect, str(bad))).encode(), b"application/json"
    return 200, json.dumps(body).encode(), b"application/json"


def _bad_request(dialect: str, message: str) -> object:
    if dialect in cloud_shapes.DIALECTS - {"bedrock"}:
        return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    if dialect == "bedrock":
        return {"__type": "ValidationException", "message": message}
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


# --- helpers ------------------------------------------------------------------------------------------------


def _one(params: Query, name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _size(params: Query, name: str, default: int, maximum: int) -> int:
    raw = _one(params, name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"{name} must be an integer from 1 to {maximum}")
    return int(raw)


def _after(batches: list[Batch], batch_id: str | None) -> list[Batch]:
    """The batches after the one named ``batch_id`` (keyset: new batches never shift a page)."""
    if batch_id is None:
        return batches
    for i, batch in enumerate(batches):
        if batch.id == batch_id:
            return batches[i + 1 :]
    raise BadRequest(f"no batch {batch_id[:64]!r} to continue after")


def _token(batch_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": batch_id}).encode()).decode().rstrip("=")


def _untoken(token: str | None) -> str | None:
    if token is None or token == "":
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise BadRequest("invalid page token") from exc
    if not isinstance(decoded, dict) or not isinstance(decoded.get("after"), str):
        raise BadRequest("invalid page token")
    return str(decoded["after"])


def timestamp(text: str) -> int | None:
    """Unix seconds from an RFC 3339 / ISO 8601 time with a zone (fractions cut to microseconds), else None."""
    head, dot, rest = text.strip().replace("Z", "+00:00").partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)] or '0'}{rest[digits:]}"
    else:
        text = head
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return int(parsed.timestamp()) if parsed.tzinfo is not None else None


def _paged(batches: list[Batch], size: int, after: str | None) -> tuple[list[Batch], bool]:
    rest = _after(batches, after)
    return rest[:size], len(rest) > size


def _objects(page: Iterable[Batch], scope: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    return [batch_object(batch, "retrieve", scope) for batch in page]


# --- the dialects -------------------------------------------------------------------------------------------

Lister = Callable[[list[Batch], Query, "tuple[str, str] | None"], Any]


def _openai(batches: list[Batch], params: Query, _: tuple[str, str] | None) -> Any:
    page, more = _paged(batches, _size(params, "limit", 20, 100), _one(params, "after"))
    data = _objects(page)
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def _anthropic(batches: list[Batch], params: Query, _: tuple[str, str] | None) -> Any:
    size = _size(params, "limit", 20, 1000)
    before = _one(params, "before_id")
    if before is not None:  # the page of newer batches just before that one
        index = next((i for i, b in enumerate(batches) if b.id == before), None)
        if index is None:
            raise BadRequest(f"no batch {before[:64]!r}")
        page, more = batches[max(index - size, 0) : index], index - size > 0
    else:
        page, more = _paged(batches, size, _one(params, "after_id"))
    data = _objects(page)
    return {
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _mistral(batches: list[Batch], params: Query, _: tuple[str, str] | None) -> Any:
    page = int(_one(params, "page") or "0") if (_one(params, "page") or "0").isdigit() else -1
    if page < 0:
        raise BadRequest("page must be a non-negative integer")
    size = _size(params, "page_size", 100, 1000)
    if (_one(params, "order_by") or "-created") == "created":
        batches = batches[::-1]
    words = set(params.get("status", []))
    if words:
        batches = [b for b in batches if native_shapes.status_word("mistral", b.shown_status) in words]
    model = _one(params, "model")
    if model is not None:
        batches = [b for b in batches if (b.model or "mistral-small-latest") == model]
    after = _one(params, "created_after")
    if after is not None:
        bound = timestamp(after)
        if bound is None:
            raise BadRequest("created_after must be an ISO 8601 date-time")
        batches = [b for b in batches if b.created_at >= bound]
    return {"object": "list", "data": _objects(batches[page * size : (page + 1) * size]), "total": len(batches)}


def _together(batches: list[Batch], _params: Query, _: tuple[str, str] | None) -> Any:
    return _objects(batches)


def _xai(batches: list[Batch], params: Query, _: tuple[str, str] | None) -> Any:
    page, more = _paged(batches, _size(params, "limit", 20, 1000), _untoken(_one(params, "pagination_token")))
    body: dict[str, Any] = {}
    if page:
        body["batches"] = _objects(page)
    if more:
        body["pagination_token"] = _token(page[-1].id)
    return body


def _gemini(batches: list[Batch], params: Query, _: tuple[str, str] | None) -> Any:
    page, more = _paged(batches, _size(params, "pageSize", 20, 1000), _untoken(_one(params, "pageToken")))
    body: dict[str, Any] = {}
    if page:
        body["operations"] = _objects(page)
    if more:
        body["nextPageToken"] = _token(page[-1].id)
    return body


def _vertex(batches: list[Batch], params: Query, scope: tuple[str, str] | None) -> Any:
    expression = _one(params, "filter")
    if expression:
        test = _vertex_filter(expression)
        batches = [b for b in batches if test(b)]
    page, more = _paged(batches, _size(params, "pageSize", 20, 1000), _untoken(_one(params, "pageToken")))
    body: dict[str, Any] = {}
    if page:
        body["batchPredictionJobs"] = _objects(page, scope)
    if more:
        body["nextPageToken"] = _token(page[-1].id)
    return body


def _bedrock(batches: list[Batch], params: Query, _: tuple[str, str] | None) -> Any:
    if (_one(params, "sortOrder") or "Descending") == "Ascending":
        batches = batches[::-1]
    word = _one(params, "statusEquals")
    if word is not None:
        batches = [b for b in batches if cloud_shapes.status_word("bedrock", b.shown_status) == word]
    for name, op in (("submitTimeAfter", ">="), ("submitTimeBefore", "<=")):
        raw = _one(params, name)
        if raw is not None:
            bound = timestamp(raw)
            if bound is None:
                raise BadRequest(f"{name} must be an ISO 8601 timestamp")
            batches = [b for b in batches if _compare(b.created_at, op, bound)]
    contains = _one(params, "nameContains")
    if contains is not None:
        batches = [b for b in batches if contains in (b.name or f"emulator-{b.id}")]
    page, more = _paged(batches, _size(params, "maxResults", 1000, 1000), _untoken(_one(params, "nextToken")))
    body: dict[str, Any] = {"invocationJobSummaries": _objects(page)}
    if more:
        body["nextToken"] = _token(page[-1].id)
    return body


_LISTERS: dict[str, Lister] = {
    **dict.fromkeys(_OPENAI_LIKE, _openai),
    "anthropic": _anthropic,
    "mistral": _mistral,
    "together": _together,
    "xai": _xai,
    "gemini": _gemini,
    "vertex": _vertex,
    "bedrock": _bedrock,
}


# --- Vertex's filter: the documented subset -------------------------------------------------------------------

_TERM = re.compile(
    r'\s*(?P<field>state|createTime|displayName|labels\.[a-z][a-z0-9_-]{0,62})\s*(?P<op>!=|>=|<=|=|>|<)\s*"(?P<value>[^"]*)"\s*'
)


def _vertex_filter(expression: str) -> Callable[[Batch], bool]:
    """``term AND term …`` where a term is ``field op "value"`` or ``(term OR term …)``; else 400."""
    conjuncts: list[Callable[[Batch], bool]] = []
    for raw in _split(expression, " AND "):
        part = raw.strip()
        if part.startswith("(") and part.endswith(")"):
            conjuncts.append(_any([_vertex_term(p) for p in _split(part[1:-1], " OR ")]))
        else:
            conjuncts.append(_vertex_term(part))
    return lambda b: all(test(b) for test in conjuncts)


def _any(alternatives: list[Callable[[Batch], bool]]) -> Callable[[Batch], bool]:
    return lambda b: any(alt(b) for alt in alternatives)


def _split(text: str, word: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
        elif depth == 0 and text.startswith(word, i):
            parts.append(text[start:i])
            i += len(word)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _vertex_term(text: str) -> Callable[[Batch], bool]:
    match = _TERM.fullmatch(text)
    if match is None:
        raise BadRequest(f"Invalid filter: cannot parse {text.strip()[:80]!r}")
    field, op, value = match["field"], match["op"], match["value"]
    if field == "createTime":
        bound = timestamp(value)
        if bound is None:
            raise BadRequest("Invalid filter: createTime needs an RFC 3339 time")
        return lambda b: _compare(b.created_at, op, bound)
    if field == "state":
        return lambda b: _compare(cloud_shapes.status_word("vertex", b.shown_status), op, value)
    if field == "displayName":
        return lambda b: _compare(b.name or "emulator batch", op, value)
    key = field.removeprefix("labels.")
    return lambda b: _compare(b.metadata.get(key), op, value)


def _compare(have: Any, op: str, want: Any) -> bool:
    if have is None:
        return op == "!="
    if op in ("=", "!="):
        return (have == want) is (op == "=")
    ordered = {">": have > want, ">=": have >= want, "<": have < want, "<=": have <= want}
    return bool(ordered[op])
