"""The emulator's raw ASGI app: provider routes, auth, faults, the request log and in-flight statistics.

Raw ASGI on uvicorn+httptools rather than a framework because the emulator must never be the bottleneck of a
benchmark: a route here is a dict lookup and a ``str.partition``. Every non-admin request is logged (headers
with secrets redacted) — including unknown paths, so a security test can assert the worker never sent
anything outside ``/{prefix}/batches/{valid id}[/cancel]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

from worker.contract import BATCH_ID_PATTERN
from worker.emulator.model import Fault, Store
from worker.emulator.shapes import COLON_CANCEL, PREFIXES, batch_body, error_response

__all__ = ["DEFAULT_KEY", "App", "DroppedConnection", "key_id"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

DEFAULT_KEY = "sk-emulator"
_SECRET_HEADERS = frozenset({b"authorization", b"x-api-key", b"xi-api-key", b"api-key"})
_BATCH_ID = re.compile(BATCH_ID_PATTERN)
_AZURE_CLASSIC = "/azure/openai/batches/"
_LOG_MAX = 2_000_000


class DroppedConnection(Exception):
    """Raised after a partial body: uvicorn then closes the socket, cutting the response off mid-body."""


def key_id(key: str) -> str:
    """A stable, non-secret name for a key, used in stats (per-account concurrency is checked by it)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class Stats:
    count: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)

    def enter(self, *names: str) -> None:
        for name in names:
            self.in_flight[name] += 1
            self.count[name] += 1
            self.max_in_flight[name] = max(self.max_in_flight[name], self.in_flight[name])

    def leave(self, *names: str) -> None:
        for name in names:
            self.in_flight[name] -= 1


@dataclass
class Quota:
    """An account-wide request rate limit (per dialect): what a provider does when its quota is cut."""

    requests_per_s: float
    retry_after_s: float = 1.0
    seen: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        """At most ``requests_per_s`` answered in any one-second window; the rest get 429."""
        while self.seen and self.seen[0] <= now - 1.0:
            self.seen.popleft()
        if len(self.seen) >= self.requests_per_s:
            return False
        self.seen.append(now)
        return True


class App:
    def __init__(self, keys: dict[str, set[str]] | None = None) -> None:
        self.keys: dict[str, set[str]] = {d: {DEFAULT_KEY} for d in PREFIXES.values()}
        for dialect, extra in (keys or {}).items():
            self.keys.setdefault(dialect, set()).update(extra)
        self.reset()

    def reset(self) -> None:
        self.store = Store()
        self.log: deque[dict[str, Any]] = deque(maxlen=_LOG_MAX)
        self.logged = 0  # requests ever logged, so `since` stays valid when the deque drops old entries
        self.stats = Stats()
        self.statuses: Counter[str] = Counter()
        self.quotas: dict[str, Quota] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_admin/"):
            from worker.emulator.admin import handle_admin

            status, body, ctype = await handle_admin(self, scope, receive)
            await _respond(send, status, body, ctype)
            return
        await self._provider(scope, send)

    async def _provider(self, scope: Scope, send: Send) -> None:
        method: str = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        dialect, batch_id, op = _route(path)
        query: bytes = scope.get("query_string", b"")
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": query.decode("latin-1"),
            "dialect": dialect,
            "batch_id": batch_id,
            "op": op,
            "headers": _redacted(scope["headers"]),
            "t_mono": time.monotonic(),
            "t_wall": time.time(),
            "status": None,
        }
        self.log.append(entry)
        self.logged += 1
        key = _presented_key(scope["headers"], dialect)
        names = [f"dialect:{dialect or '-'}"] + ([f"key:{dialect}:{key_id(key)}"] if key and dialect else [])
        self.stats.enter(*names)
        try:
            versionless = dialect == "azure" and path.startswith(_AZURE_CLASSIC) and b"api-version=" not in query
            status, body, ctype, extra, drop = await self._answer(
                dialect, batch_id, op, method, key, versionless=versionless
            )
            entry["status"] = status
            entry["dropped"] = drop
            entry["t_done_mono"] = time.monotonic()
            self.statuses[f"{dialect}:{status}"] += 1
            if drop:
                await _respond_partial(send, status, body, ctype)
                raise DroppedConnection(path)
            await _respond(send, status, body, ctype, extra)
        finally:
            self.stats.leave(*names)

    async def _answer(  # noqa: PLR0911 - one early answer per way a request can fail, in protocol order
        self,
        dialect: str | None,
        batch_id: str | None,
        op: str | None,
        method: str,
        key: str | None,
        *,
        versionless: bool = False,
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bool]:
        if versionless:  # Azure's classic API needs ``?api-version=``
            return (*error_response("azure", "no_version"), [], False)
        if dialect is None or batch_id is None or op is None:
            return (*error_response(dialect or "openai", "no_route", batch_id=batch_id or ""), [], False)
        if method != ("POST" if op == "cancel" else "GET"):
            return 405, b'{"error":{"message":"method not allowed"}}', b"application/json", [], False
        if key is None or key not in self.keys.get(dialect, ()):
            return (*error_response(dialect, "unauthorized"), [], False)
        quota = self.quotas.get(dialect)
        if quota is not None and not quota.allow(time.monotonic()):
            status, body, ctype = error_response(dialect, "rate_limit")
            return status, body, ctype, [(b"retry-after", _number(quota.retry_after_s).encode())], False
        batch = self.store.get(dialect, batch_id)
        if batch is None:
            return (*error_response(dialect, "not_found", batch_id=batch_id), [], False)
        if batch.scenario.delay_s:
            await asyncio.sleep(batch.scenario.delay_s)
        fault = batch.next_fault(op)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        elif fault is not None and fault.kind != "drop":
            return _fault_answer(dialect, fault)
        if op == "cancel" and not batch.cancel() and batch.scenario.finished_answer == "error":
            answer = error_response(dialect, "finished", batch_id=batch_id, state=batch.status)
            return (*answer, [], False)
        if op == "retrieve":
            batch.retrieve()
        body = batch_body(batch, op)
        return 200, body, b"application/json", [], fault is not None and fault.kind == "drop"


def _fault_answer(dialect: str, fault: Fault) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bool]:
    kind = fault.kind if fault.kind in ("overload", "rate_limit", "quota") else "server_error"
    status, body, ctype = error_response(dialect, kind, status=fault.status)
    extra: list[tuple[bytes, bytes]] = []
    if fault.retry_after_s is not None:
        value = formatdate(time.time() + fault.retry_after_s, usegmt=True) if fault.retry_after_date else None
        extra.append((b"retry-after", (value or _number(fault.retry_after_s)).encode()))
    if fault.retry_after_ms is not None:
        extra.append((b"retry-after-ms", str(fault.retry_after_ms).encode()))
    return status, body, ctype, extra, False


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def valid_batch_id(batch_id: str) -> bool:
    return bool(_BATCH_ID.fullmatch(batch_id)) and ".." not in batch_id


def _route(path: str) -> tuple[str | None, str | None, str | None]:
    """``(dialect, batch_id, op)`` for a well-formed provider path, else Nones (an unknown path)."""
    for prefix, dialect in PREFIXES.items():
        if path.startswith(prefix):
            segment, slash, rest = path[len(prefix) :].partition("/")
            # A custom-method cancel (``{id}:cancel``): the literal colon before decoding is the separator,
            # so an id that itself holds ':' (sent as %3A) is never mistaken for one.
            colon_cancel = dialect in COLON_CANCEL and not slash and segment.endswith(":cancel")
            if colon_cancel:
                segment = segment.removesuffix(":cancel")
            # Split on the raw path first (an encoded %2F must not become a separator), then decode the
            # segment as a real provider's router does: the worker percent-encodes ':' in ids like ``a:b``.
            batch_id = unquote(segment)
            if not valid_batch_id(batch_id):
                return dialect, None, None
            if colon_cancel:
                return dialect, batch_id, "cancel"
            if dialect in COLON_CANCEL and slash:
                return dialect, batch_id, None
            if not slash:
                return dialect, batch_id, "retrieve"
            return (dialect, batch_id, "cancel") if rest == "cancel" else (dialect, batch_id, None)
    return None, None, None


#: Key headers besides ``Authorization: Bearer`` that a dialect's real API accepts.
_KEY_HEADERS = {
    "deepinfra": (b"x-api-key", b"xi-api-key"),
    "anthropic": (b"x-api-key",),  # the documented header; the 2.x SDK sends Bearer, also accepted
    "azure": (b"api-key",),
}


def _presented_key(headers: list[tuple[bytes, bytes]], dialect: str | None) -> str | None:
    """The key a request presents; Azure takes only ``api-key`` (a bearer there is an Entra token, not a key)."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer " and dialect != "azure":
            return value[7:].decode("latin-1").strip()
        if name in _KEY_HEADERS.get(dialect or "", ()):
            return value.decode("latin-1").strip()
    return None


def _redacted(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {
        name.decode("latin-1"): "[redacted]" if name in _SECRET_HEADERS else value.decode("latin-1")
        for name, value in headers
    }


async def _respond(
    send: Send, status: int, body: bytes, ctype: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_partial(send: Send, status: int, body: bytes, ctype: bytes) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
