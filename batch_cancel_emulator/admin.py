"""The emulator's admin API (``/_admin/...``): create batches with scenarios, read the request log and stats.

Endpoints (JSON in, JSON out):

* ``POST /_admin/batches`` ``{dialect, id?, scenario?, attributes?}`` → ``{dialect, id}``; ``attributes``
  (``{metadata, model, endpoint, name, created_at}``, all optional) are what a selector lists and matches
  (``batch_cancel_emulator.listing``). A batch may be created at any time, also while a worker lists.
* ``POST /_admin/batches/bulk`` ``{dialect, count, prefix?, scenario?, attributes?}`` → ``{dialect, ids}``
* ``GET  /_admin/batches/{dialect}/{id}`` → the emulated state (status, timestamps, fault progress)
* ``GET  /_admin/requests?dialect=&batch_id=&since=`` → ``{requests, next}`` (``since`` = a previous ``next``)
* ``GET  /_admin/stats`` → counts, current and max in-flight per ``dialect:…`` and per ``key:dialect:key_id``
* ``POST /_admin/quota`` ``{dialect, requests_per_s, retry_after_s?}`` → answer 429 beyond that rate (null lifts it)
* ``POST /_admin/keys`` ``{dialect, key}`` → accept one more API key; ``POST /_admin/reset`` → forget all but keys
* ``POST /_admin/google/keys`` ``{key_id, client_email, public_key_pem}`` → trust a service-account key at the
  token endpoint; ``POST /_admin/google/tokens`` ``{lifetime_s, accept?}`` → how long new access tokens live
  (``accept: false``: the API refuses every token, even fresh ones);
  ``POST /_admin/google/revoke`` → forget every issued token (the next Vertex request answers 401)
* ``POST /_admin/aws/credentials`` ``{access_key_id, secret_access_key}`` → accept one more SigV4 signing key;
  ``POST /_admin/aws/web_identity`` ``{token, role_arn, session_lifetime_s?}`` → STS trusts that IRSA token
* ``POST /_admin/entra/apps`` ``{tenant, client_id, client_secret? | certificate_pem? | federated_token?}`` →
  Entra knows that application with that credential (``entra.py``); ``POST /_admin/entra/managed``
  ``{client_id?}`` → assign a managed identity (none: the system-assigned one); ``POST /_admin/entra/tokens``
  ``{lifetime_s?, required?, accept?, delay_s?}`` → how long new tokens live, whether Azure routes refuse API
  keys, (``accept: false``) whether they refuse every token, even fresh ones, and how long a token takes;
  ``POST /_admin/entra/revoke`` → forget every issued token (the next Azure request with one answers 401)
* ``POST /_admin/push`` ``{dialect, url, secret, header?, retry?, timeout_s?}`` → deliver this dialect's batch
  events (openai, gemini, bedrock) to ``url`` (``push.PushTarget``; ``url: null`` stops); ``GET
  /_admin/deliveries?dialect=&batch_id=&since=`` → ``{deliveries, next}``, one entry per delivery attempt
  (``reset`` forgets targets and deliveries, like quotas)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from batch_cancel_emulator import push_events
from batch_cancel_emulator.model import Attributes, Scenario
from batch_cancel_emulator.push import PushTarget
from batch_cancel_emulator.shapes import PREFIXES, has_error

if TYPE_CHECKING:
    from batch_cancel_emulator.app import App, Receive, Scope

__all__ = ["handle_admin"]

_DIALECTS = frozenset(PREFIXES.values())
_BULK_MAX = 1_000_000
Answer = tuple[int, bytes, bytes]


def _ok(value: object, status: int = 200) -> Answer:
    return status, json.dumps(value).encode(), b"application/json"


def _bad(message: str, status: int = 400) -> Answer:
    return _ok({"error": message}, status)


async def _read(receive: Receive) -> Any:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    return json.loads(raw) if raw else {}


async def handle_admin(app: App, scope: Scope, receive: Receive) -> Answer:
    method, parts = scope["method"], scope["path"].strip("/").split("/")[1:]
    if method == "GET" and len(parts) == 3 and parts[0] == "batches":
        return _show(app, parts[1], parts[2])
    handler = _ROUTES.get((method, "/".join(parts)))
    if handler is None:
        return _bad("no such admin endpoint", 404)
    try:
        body = await _read(receive) if method == "POST" else {}
        if not isinstance(body, dict):
            return _bad("body must be a JSON object")
        return handler(app, body, parse_qs(scope.get("query_string", b"").decode()))
    except ValidationError as exc:
        return _bad(f"invalid scenario: {exc.errors(include_url=False, include_input=False)}")
    except (KeyError, ValueError, TypeError) as exc:
        return _bad(f"bad request: {exc}")


Query = dict[str, list[str]]


def _create(app: App, body: dict[str, Any], _: Query) -> Answer:
    from batch_cancel_emulator.app import valid_batch_id

    dialect = _dialect(body)
    batch_id = str(body.get("id") or _new_id(dialect))
    if not valid_batch_id(batch_id):
        return _bad("id does not match the batch id pattern")
    app.store.create(dialect, batch_id, _scenario(dialect, body), _attributes(body))
    return _ok({"dialect": dialect, "id": batch_id}, 201)


def _bulk(app: App, body: dict[str, Any], _: Query) -> Answer:
    dialect, count = _dialect(body), int(body.get("count", 0))
    if not 0 < count <= _BULK_MAX:
        return _bad(f"count must be 1..{_BULK_MAX}")
    scenario, attributes = _scenario(dialect, body), _attributes(body)
    prefix = str(body.get("prefix") or f"batch_{uuid.uuid4().hex[:8]}_")
    ids = [f"{prefix}{i}" for i in range(count)]
    for batch_id in ids:
        app.store.create(dialect, batch_id, scenario, attributes)
    return _ok({"dialect": dialect, "ids": ids}, 201)


def _new_id(dialect: str) -> str:
    """A fresh id in the dialect's own form (Vertex: a number; Bedrock: 12 lowercase letters/digits)."""
    if dialect == "vertex":
        return str(uuid.uuid4().int % 10**19)
    if dialect == "bedrock":
        return uuid.uuid4().hex[:12]
    if dialect == "gemini":
        return f"batch-{uuid.uuid4().hex[:20]}"
    return f"batch_{uuid.uuid4().hex[:20]}"


def _scenario(dialect: str, body: dict[str, Any]) -> Scenario:
    """The scenario asked for, refused when it needs an answer this dialect has no known shape for."""
    scenario = Scenario.model_validate(body.get("scenario") or {})
    for fault in scenario.faults:
        if fault.kind == "quota" and not has_error(dialect, "quota"):
            raise ValueError(f"no documented quota answer for {dialect}")
    return scenario


def _attributes(body: dict[str, Any]) -> Attributes:
    return Attributes.model_validate(body.get("attributes") or {})


def _show(app: App, dialect: str, batch_id: str) -> Answer:
    batch = app.store.get(dialect, batch_id)
    if batch is None:
        return _bad("no such batch", 404)
    return _ok(
        {
            "dialect": batch.dialect,
            "id": batch.id,
            "status": batch.status,
            "times": batch.times,
            "created_at": batch.created_at,
            "metadata": batch.metadata,
        }
    )


def _stats(app: App, _: dict[str, Any], __: Query) -> Answer:
    s = app.stats
    return _ok(
        {
            "count": dict(s.count),
            "in_flight": dict(s.in_flight),
            "max_in_flight": dict(s.max_in_flight),
            "statuses": dict(app.statuses),
            "batches": len(app.store.batches),
            "google_tokens": {"issued": app.google.issued, "refused": app.google.refused},
            "aws_signatures": {"verified": app.aws.verified, "refused": app.aws.refused, "assumed": app.aws.assumed},
            "entra_tokens": {"issued": app.entra.issued, "refused": app.entra.refused},
            "push": app.push.stats(),
        }
    )


def _add_key(app: App, body: dict[str, Any], _: Query) -> Answer:
    app.keys.setdefault(_dialect(body), set()).add(str(body["key"]))
    return _ok({"ok": True})


def _quota(app: App, body: dict[str, Any], _: Query) -> Answer:
    """``{dialect, requests_per_s, retry_after_s?}``: cut the account's quota (``requests_per_s: null`` lifts it)."""
    dialect = _dialect(body)
    rate = body.get("requests_per_s")
    if rate is None:
        app.quotas.pop(dialect, None)
    else:
        from batch_cancel_emulator.app import Quota  # app imports this module lazily; no import cycle at load time

        app.quotas[dialect] = Quota(float(rate), float(body.get("retry_after_s", 1.0)))
    return _ok({"ok": True})


def _google_key(app: App, body: dict[str, Any], _: Query) -> Answer:
    app.google.register(str(body["key_id"]), str(body["client_email"]), str(body["public_key_pem"]))
    return _ok({"ok": True})


def _google_tokens(app: App, body: dict[str, Any], _: Query) -> Answer:
    lifetime = float(body["lifetime_s"])
    if not 0 < lifetime <= 86_400:
        return _bad("lifetime_s must be in (0, 86400]")
    app.google.lifetime_s = lifetime
    app.google.accept = bool(body.get("accept", True))
    return _ok({"ok": True})


def _google_revoke(app: App, _: dict[str, Any], __: Query) -> Answer:
    app.google.revoke()
    return _ok({"ok": True})


def _aws_credentials(app: App, body: dict[str, Any], _: Query) -> Answer:
    app.aws.add(str(body["access_key_id"]), str(body["secret_access_key"]))
    return _ok({"ok": True})


def _web_identity(app: App, body: dict[str, Any], _: Query) -> Answer:
    app.aws.web_identities[str(body["token"])] = str(body["role_arn"])
    if body.get("session_lifetime_s") is not None:
        app.aws.session_lifetime_s = float(body["session_lifetime_s"])
    return _ok({"ok": True})


def _entra_app(app: App, body: dict[str, Any], _: Query) -> Answer:
    known = (str(body["tenant"]), str(body["client_id"]))
    entra = app.entra
    if body.get("client_secret") is not None:
        entra.client_secrets[known] = str(body["client_secret"])
    if body.get("certificate_pem") is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        certificate = x509.load_pem_x509_certificate(str(body["certificate_pem"]).encode())
        public = certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        entra.certificates[known] = public.decode()
    if body.get("federated_token") is not None:
        entra.federated.setdefault(known, set()).add(str(body["federated_token"]))
    return _ok({"ok": True})


def _entra_managed(app: App, body: dict[str, Any], _: Query) -> Answer:
    from batch_cancel_emulator.entra import SYSTEM_ASSIGNED

    app.entra.managed.add(str(body.get("client_id") or SYSTEM_ASSIGNED))
    return _ok({"ok": True})


def _entra_tokens(app: App, body: dict[str, Any], _: Query) -> Answer:
    lifetime = float(body.get("lifetime_s", 3600.0))
    if not 0 < lifetime <= 86_400:
        return _bad("lifetime_s must be in (0, 86400]")
    app.entra.lifetime_s = lifetime
    app.entra.required = bool(body.get("required", False))
    app.entra.accept = bool(body.get("accept", True))
    app.entra.delay_s = float(body.get("delay_s", 0.0))
    return _ok({"ok": True})


def _entra_revoke(app: App, _: dict[str, Any], __: Query) -> Answer:
    app.entra.revoke()
    return _ok({"ok": True})


def _push(app: App, body: dict[str, Any], _: Query) -> Answer:
    """Register (or, with ``url: null``, remove) the push target of one dialect."""
    if body.get("url") is None:
        if body.get("dialect") not in push_events.DIALECTS:
            return _bad(f"dialect must be one of {list(push_events.DIALECTS)}")
        app.push.unregister(str(body["dialect"]))
        return _ok({"ok": True})
    try:
        app.push.register(PushTarget.model_validate(body))
    except ValidationError as exc:  # its own message: the default one would say "invalid scenario"
        errors = exc.errors(include_url=False, include_input=False, include_context=False)  # never the secret
        return _bad(f"invalid push target: {errors}")
    return _ok({"ok": True})


def _deliveries(app: App, _: dict[str, Any], query: Query) -> Answer:
    since = int(query.get("since", ["0"])[0])
    dialect = query.get("dialect", [None])[0]
    batch_id = query.get("batch_id", [None])[0]
    return _ok({"deliveries": app.push.deliveries(since, dialect, batch_id), "next": app.push.recorded})


def _reset(app: App, _: dict[str, Any], __: Query) -> Answer:
    app.reset()
    return _ok({"ok": True})


def _dialect(body: dict[str, Any]) -> str:
    dialect = body.get("dialect")
    if dialect not in _DIALECTS:
        raise ValueError(f"dialect must be one of {sorted(_DIALECTS)}")
    return str(dialect)


def _requests(app: App, _: dict[str, Any], query: Query) -> Answer:
    since = int(query.get("since", ["0"])[0])
    dialect = query.get("dialect", [None])[0]
    batch_id = query.get("batch_id", [None])[0]
    offset = app.logged - len(app.log)
    start = max(since - offset, 0)
    entries = list(app.log)[start:]
    if dialect is not None:
        entries = [e for e in entries if e["dialect"] == dialect]
    if batch_id is not None:
        entries = [e for e in entries if e["batch_id"] == batch_id]
    return _ok({"requests": entries, "next": app.logged})


_ROUTES: dict[tuple[str, str], Callable[[App, dict[str, Any], Query], Answer]] = {
    ("POST", "batches"): _create,
    ("POST", "quota"): _quota,
    ("POST", "batches/bulk"): _bulk,
    ("GET", "requests"): _requests,
    ("GET", "stats"): _stats,
    ("POST", "keys"): _add_key,
    ("POST", "reset"): _reset,
    ("POST", "push"): _push,
    ("GET", "deliveries"): _deliveries,
    ("POST", "google/keys"): _google_key,
    ("POST", "google/tokens"): _google_tokens,
    ("POST", "google/revoke"): _google_revoke,
    ("POST", "aws/credentials"): _aws_credentials,
    ("POST", "aws/web_identity"): _web_identity,
    ("POST", "entra/apps"): _entra_app,
    ("POST", "entra/managed"): _entra_managed,
    ("POST", "entra/tokens"): _entra_tokens,
    ("POST", "entra/revoke"): _entra_revoke,
}
