"""The emulator's raw ASGI app: provider routes, auth, faults, the request log and in-flight statistics.

Raw ASGI on uvicorn+httptools rather than a framework because the emulator must never be the bottleneck of a
benchmark: a route here is a dict lookup and a ``str.partition``. Every non-admin request is logged (headers
with secrets redacted) — including unknown paths, so a security test can assert the worker never sent
anything outside ``/{prefix}/batches/{valid id}[/cancel]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

from batch_cancel_emulator import cloud_shapes, listing
from batch_cancel_emulator.cloud_auth import AwsKeys, GoogleTokens
from batch_cancel_emulator.entra import EntraTokens, is_entra_path
from batch_cancel_emulator.model import Batch, Fault, Store
from batch_cancel_emulator.push import DEFAULT_CONCURRENCY, Pusher
from batch_cancel_emulator.shapes import COLON_CANCEL, PREFIXES, batch_body, error_response
from worker.contract import BATCH_ID_PATTERN

__all__ = ["DEFAULT_KEY", "App", "DroppedConnection", "key_id"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

DEFAULT_KEY = "sk-emulator"
_SECRET_HEADERS = frozenset(
    {b"authorization", b"x-api-key", b"xi-api-key", b"api-key", b"x-goog-api-key", b"x-amz-security-token"}
)
#: Dialects whose requests carry cloud credentials (checked by ``cloud_auth``), not a key from ``App.keys``.
_CLOUD_AUTH = frozenset({"vertex", "bedrock"})
_TOKEN_PATH = "/google/token"  # noqa: S105 - a path, not a password
_STS_PATH = "/aws/sts"
_VERTEX_SCOPE = re.compile(
    r"(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20})/locations/(?P<location>[a-z]+(-[a-z]+)*[0-9]{0,2})"
    r"/batchPredictionJobs/"
)
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
    def __init__(self, keys: dict[str, set[str]] | None = None, *, push_concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.keys: dict[str, set[str]] = {d: {DEFAULT_KEY} for d in PREFIXES.values()}
        for dialect, extra in (keys or {}).items():
            self.keys.setdefault(dialect, set()).update(extra)
        self.google = GoogleTokens()  # like keys, kept across resets
        self.aws = AwsKeys()
        self.entra = EntraTokens()
        self.push = Pusher(self._batch, push_concurrency)
        self.reset()

    def _batch(self, dialect: str, batch_id: str) -> Batch | None:
        """A batch of the current store (``reset`` replaces the store, so the pusher must not hold one)."""
        return self.store.get(dialect, batch_id)

    def reset(self) -> None:
        self.store = Store()
        self.log: deque[dict[str, Any]] = deque(maxlen=_LOG_MAX)
        self.logged = 0  # requests ever logged, so `since` stays valid when the deque drops old entries
        self.stats = Stats()
        self.statuses: Counter[str] = Counter()
        self.quotas: dict[str, Quota] = {}
        self.push.reset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_admin/"):
            from batch_cancel_emulator.admin import handle_admin

            status, body, ctype = await handle_admin(self, scope, receive)
            await _respond(send, status, body, ctype)
            return
        if path == _TOKEN_PATH:
            await self._token(scope, receive, send)
            return
        if path == _STS_PATH:
            await self._sts(scope, receive, send)
            return
        if is_entra_path(path):
            await self._entra(scope, receive, send)
            return
        await self._provider(scope, receive, send)

    async def _entra(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Microsoft Entra ID's token, OpenID-configuration and IMDS endpoints (``entra.EntraTokens``); logged."""
        headers = dict(scope["headers"])
        path: str = scope["path"]
        query: bytes = scope.get("query_string", b"")
        entry = self._log_entry(
            scope["method"], path=path, query=query, dialect="entra", batch_id=None, op=None, headers=scope["headers"]
        )
        base = f"{scope.get('scheme', 'http')}://{headers.get(b'host', b'').decode('latin-1')}"
        if self.entra.delay_s and not path.endswith("openid-configuration"):
            await asyncio.sleep(self.entra.delay_s)
        status, answer, op = self.entra.handle(
            scope["method"], path, query, headers, body=await _body(receive), base=base
        )
        entry.update(op=op, status=status, t_done_mono=time.monotonic())
        await _respond(send, status, self.entra.encode(answer), b"application/json", [(b"cache-control", b"no-store")])

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Google's OAuth2 token endpoint (``cloud_auth.GoogleTokens``); logged like a provider request."""
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        entry = self._log_entry(
            scope["method"],
            path=_TOKEN_PATH,
            query=b"",
            dialect="google_token",
            batch_id=None,
            op="token",
            headers=scope["headers"],
        )
        if scope["method"] != "POST":
            status, answer = 405, {"error": "invalid_request", "error_description": "POST only"}
        else:
            status, answer = self.google.exchange(await _body(receive), f"http://{host}{_TOKEN_PATH}")
        entry["status"] = status
        entry["t_done_mono"] = time.monotonic()
        await _respond(
            send, status, json.dumps(answer).encode(), b"application/json", [(b"cache-control", b"no-store")]
        )

    async def _sts(self, scope: Scope, receive: Receive, send: Send) -> None:
        """AWS STS for IRSA (``cloud_auth.AwsKeys.assume_role_with_web_identity``); logged like a provider request."""
        headers = scope["headers"]
        entry = self._log_entry(
            scope["method"], path=_STS_PATH, query=b"", dialect="aws_sts", batch_id=None, op="sts", headers=headers
        )
        status, answer = self.aws.assume_role_with_web_identity(await _body(receive))
        entry["status"] = status
        entry["t_done_mono"] = time.monotonic()
        await _respond(send, status, answer, b"text/xml")

    def _log_entry(
        self,
        method: str,
        *,
        path: str,
        query: bytes,
        dialect: str | None,
        batch_id: str | None,
        op: str | None,
        headers: list[tuple[bytes, bytes]],
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": query.decode("latin-1"),
            "dialect": dialect,
            "batch_id": batch_id,
            "op": op,
            "headers": _redacted(headers),
            "t_mono": time.monotonic(),
            "t_wall": time.time(),
            "status": None,
        }
        self.log.append(entry)
        self.logged += 1
        return entry

    async def _provider(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        dialect, batch_id, op = _route(path)
        query: bytes = scope.get("query_string", b"")
        entry = self._log_entry(
            method, path=path, query=query, dialect=dialect, batch_id=batch_id, op=op, headers=scope["headers"]
        )
        vertex_scope = _vertex_scope(path, listed=op == "list") if dialect == "vertex" else None
        auth_error: str | None = None
        entra = False  # an Azure request authenticated by an Entra token (checked here, not against App.keys)
        if dialect == "vertex":
            entry["scope"] = vertex_scope
            key, auth_error = self.google.check(_bearer(scope["headers"]))
        elif dialect == "bedrock":
            body = await _body(receive)
            region, auth_error = self.aws.check(
                method, path, query.decode("latin-1"), scope["headers"], body=body, service="bedrock"
            )
            entry["region"] = region
            key = _access_key_id(scope["headers"]) if auth_error is None else None
        elif dialect == "azure" and (bearer := self._entra_bearer(scope["headers"])) is not None:
            key, auth_error = self.entra.check(bearer)  # a bearer on Azure is an Entra token, never a key
            entra = auth_error is None
        else:
            key = _presented_key(scope["headers"], dialect)
            if dialect == "azure" and self.entra.required:
                auth_error = "bad_token"  # local authentication disabled: a key is refused like a missing token
        entry["key_id"] = key_id(key) if key else None  # which account (or which worker) asked; never the key
        names = [f"dialect:{dialect or '-'}"] + ([f"key:{dialect}:{key_id(key)}"] if key and dialect else [])
        self.stats.enter(*names)
        try:
            classic = path.startswith(_AZURE_CLASSIC) or path == _AZURE_CLASSIC.rstrip("/")
            versionless = dialect == "azure" and classic and b"api-version=" not in query
            status, answer, ctype, extra, drop = await self._answer(
                dialect,
                batch_id,
                op,
                method,
                key,
                versionless=versionless,
                auth_error=auth_error,
                scope=vertex_scope,
                query=query,
                entra=entra,
            )
            extra = [*extra, *cloud_shapes.error_headers(dialect, status, answer)]
            entry["status"] = status
            entry["dropped"] = drop
            entry["t_done_mono"] = time.monotonic()
            self.statuses[f"{dialect}:{status}"] += 1
            if drop:
                await _respond_partial(send, status, answer, ctype)
                raise DroppedConnection(path)
            await _respond(send, status, answer, ctype, extra)
        finally:
            self.stats.leave(*names)

    def _entra_bearer(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The Entra token an Azure request authenticates with: its bearer, unless it also carries an ``api-key``
        that the resource accepts (key authentication on: the key decides, as before Entra was emulated)."""
        if not self.entra.required and any(name == b"api-key" for name, _ in headers):
            return None
        return _bearer(headers)

    async def _answer(  # noqa: PLR0911 - one early answer per way a request can fail, in protocol order
        self,
        dialect: str | None,
        batch_id: str | None,
        op: str | None,
        method: str,
        key: str | None,
        *,
        versionless: bool = False,
        auth_error: str | None = None,
        scope: tuple[str, str] | None = None,
        query: bytes = b"",
        entra: bool = False,
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bool]:
        if versionless:  # Azure's classic API needs ``?api-version=``
            return (*error_response("azure", "no_version"), [], False)
        if dialect is None or op is None or (batch_id is None and op != "list"):
            return (*error_response(dialect or "openai", "no_route", batch_id=batch_id or ""), [], False)
        if method != ("POST" if op == "cancel" else "GET"):
            return 405, b'{"error":{"message":"method not allowed"}}', b"application/json", [], False
        if (
            auth_error is not None
            or key is None
            or (dialect not in _CLOUD_AUTH and not entra and key not in self.keys.get(dialect, ()))
        ):
            return (*error_response(dialect, auth_error or "unauthorized"), [], False)
        quota = self.quotas.get(dialect)
        if quota is not None and not quota.allow(time.monotonic()):
            status, body, ctype = error_response(dialect, "rate_limit")
            return status, body, ctype, [(b"retry-after", _number(quota.retry_after_s).encode())], False
        if op == "list":
            return (*listing.answer(self.store, dialect, query, scope), [], False)
        assert batch_id is not None
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
        before = batch.status, batch.shown_status
        if op == "cancel" and not batch.cancel() and batch.scenario.finished_answer == "error":
            conflict = dialect == "bedrock" and batch.scenario.bedrock_finished == "ConflictException"
            answer = error_response(
                dialect, "finished_conflict" if conflict else "finished", batch_id=batch_id, state=batch.status
            )
            return (*answer, [], False)
        if op == "retrieve":
            batch.retrieve()
        self.push.observe(batch, *before)  # a pushing provider tells of the change (push.py)
        body = batch_body(batch, op, scope)
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


def _route(path: str) -> tuple[str | None, str | None, str | None]:  # noqa: PLR0911 - one return per path shape
    """``(dialect, batch_id, op)`` for a well-formed provider path, else Nones (an unknown path).

    A list path (``listing.list_dialect``) is ``(dialect, None, "list")``.
    """
    listed = listing.list_dialect(path)
    if listed is not None:
        return listed, None, "list"
    for prefix, dialect in PREFIXES.items():
        if path.startswith(prefix):
            remainder = path[len(prefix) :]
            if dialect == "vertex":  # the account's project and location come first
                scope = _VERTEX_SCOPE.match(remainder)
                if scope is None:
                    return dialect, None, None
                remainder = remainder[scope.end() :]
            segment, slash, rest = remainder.partition("/")
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
            cancel_word = "stop" if dialect == "bedrock" else "cancel"
            return (dialect, batch_id, "cancel") if rest == cancel_word else (dialect, batch_id, None)
    return None, None, None


def _vertex_scope(path: str, *, listed: bool = False) -> tuple[str, str] | None:
    """The (project, location) a Vertex path names (a list path ends at ``batchPredictionJobs``)."""
    match = _VERTEX_SCOPE.match(path[len(cloud_shapes.VERTEX_PREFIX) :] + ("/" if listed else ""))
    return (match["project"], match["location"]) if match else None


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
    return None


def _access_key_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The access key id a SigV4 ``Authorization`` names (an identifier, not a secret)."""
    for name, value in headers:
        if name == b"authorization":
            return value.decode("latin-1").partition("Credential=")[2].partition("/")[0] or None
    return None


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


#: Key headers besides ``Authorization: Bearer`` that a dialect's real API accepts.
_KEY_HEADERS = {
    "deepinfra": (b"x-api-key", b"xi-api-key"),
    "anthropic": (b"x-api-key",),  # the documented header; the 2.x SDK sends Bearer, also accepted
    "azure": (b"api-key",),
    "gemini": (b"x-goog-api-key",),
}


def _presented_key(headers: list[tuple[bytes, bytes]], dialect: str | None) -> str | None:
    """The key a request presents; Azure takes only ``api-key`` (a bearer there is an Entra token, not a key)."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer " and dialect not in ("azure", "gemini"):
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
