"""Google OAuth2 access tokens for Vertex AI, minted and refreshed by google-auth (extra ``[google]``).

An account names a service-account key file (a Secret mount) or Application Default Credentials (GKE workload
identity, the metadata server, ``GOOGLE_APPLICATION_CREDENTIALS``). google-auth does the OAuth2 work: signing
the service account's JWT assertion, calling the token endpoint the key file names, reading the metadata server.
This module decides *when*:

* A token is refreshed before it expires: once less than a quarter of its lifetime, at most 5 minutes, remains
  (a Google token lives an hour, so at 55 minutes). Concurrent requests share one refresh (a lock); requests
  with a fresh token never wait for it.
* google-auth's refresh is blocking I/O, so it runs in a thread; the event loop keeps serving other accounts.
* A request the API refuses with 401 gets exactly one more try with a newly minted token (the token may have
  been revoked, or the clocks disagree); a second 401 is the answer the dialect classifies: ``rejected``.
* A refresh the token endpoint refuses (``invalid_grant``: a deleted key, a disabled account) is ``rejected``
  with the endpoint's reason; a refresh that failed in transit is retried within the call's retry budget.

google-auth speaks to the token endpoint through its transport interface; ``_HttpxRequest`` implements it with a
synchronous httpx client, so httpx stays the one HTTP client (and no ``requests`` is needed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from typing import Any

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport
import httpx
from google.oauth2 import service_account

from worker.config import AccountConfig, ConfigError
from worker.errors import Rejected, Retryable

__all__ = ["CLOUD_PLATFORM", "GoogleTokenAuth", "load_google_credentials"]

log = logging.getLogger("worker.providers.google")
#: Never below WARNING, whatever BCW_LOG_LEVEL says: google's DEBUG logs print what a secret can be part of
#: (canonical requests with session tokens, token-endpoint exchanges).
logging.getLogger("google").setLevel(logging.WARNING)

#: The scope Vertex AI's REST API needs (its docs for ``batchPredictionJobs.cancel``).
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_MAX_MARGIN_S = 300.0
_TOKEN_TIMEOUT_S = 10.0
_UNKNOWN_LIFETIME_S = 3000.0  # a token without an expiry (rare): refresh it well within Google's hour anyway


def load_google_credentials(acc: AccountConfig, where: str) -> google.auth.credentials.Credentials:
    """The account's credentials, scoped for Vertex AI; a missing or malformed key file fails at start."""
    if acc.google_service_account_file is not None:
        path = acc.google_service_account_file
        try:
            creds: google.auth.credentials.Credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(path), scopes=[CLOUD_PLATFORM]
            )
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read google_service_account_file {path}: {exc.strerror}") from None
        except (ValueError, KeyError, google.auth.exceptions.GoogleAuthError):
            # never the file's content (a private key) in the message
            raise ConfigError(f"{where}: google_service_account_file {path} is not a service-account key") from None
        return creds
    try:
        creds, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
    except google.auth.exceptions.GoogleAuthError as exc:
        raise ConfigError(f"{where}: no Application Default Credentials: {_short(exc)}") from None
    return creds


class _Response(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class _HttpxRequest(google.auth.transport.Request):
    """google-auth's transport interface over a synchronous httpx client (used from a worker thread only)."""

    def __init__(self) -> None:
        self._client = httpx.Client(timeout=_TOKEN_TIMEOUT_S, follow_redirects=False, trust_env=False)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **_: Any,
    ) -> _Response:
        try:
            response = self._client.request(
                method, url, content=body, headers=headers, timeout=timeout or _TOKEN_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            raise google.auth.exceptions.TransportError(f"{type(exc).__name__}: {exc}") from exc  # type: ignore[no-untyped-call]
        return _Response(response)

    def close(self) -> None:
        self._client.close()


class GoogleTokenAuth(httpx.Auth):
    """``Authorization: Bearer <access token>`` on each request, the token kept fresh (see the module docstring)."""

    def __init__(self, credentials: google.auth.credentials.Credentials, where: str) -> None:
        self._credentials = credentials
        self._where = where
        self._request = _HttpxRequest()
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0  # time.monotonic() after which the token counts as about to expire

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._fresh_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:  # revoked, or the clocks disagree: one retry with a newly minted token
            token = await self._fresh_token(refused=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise NotImplementedError("GoogleTokenAuth is for the worker's async client only")

    def close(self) -> None:
        """Close the token endpoint's connections (``ProviderClient.aclose``)."""
        self._request.close()

    async def _fresh_token(self, refused: str | None = None) -> str:
        token = self._token
        if token is not None and token != refused and time.monotonic() < self._refresh_at:
            return token
        async with self._lock:
            # another request may have refreshed while this one waited for the lock
            if self._token is not None and self._token != refused and time.monotonic() < self._refresh_at:
                return self._token
            await self._refresh()
            assert self._token is not None
            return self._token

    async def _refresh(self) -> None:
        started = time.monotonic()
        try:
            await asyncio.to_thread(self._credentials.refresh, self._request)
        except google.auth.exceptions.RefreshError as exc:
            log.warning("google token refresh refused for %s: %s", self._where, _short(exc))
            if exc.retryable:
                raise Retryable(f"google token endpoint: {_short(exc)}") from None
            raise Rejected(None, "credentials_refused", f"google token refresh refused: {_short(exc)}") from None
        except google.auth.exceptions.TransportError as exc:
            log.warning("google token refresh failed for %s: %s", self._where, _short(exc))
            raise Retryable(f"google token endpoint unreachable: {_short(exc)}") from None
        token = self._credentials.token
        if not isinstance(token, str) or not token:
            raise Rejected(None, "credentials_refused", "google token endpoint answered without an access token")
        lifetime = _seconds_left(self._credentials.expiry)
        self._token = token
        self._refresh_at = started + lifetime - min(_MAX_MARGIN_S, lifetime / 4)
        log.info("google access token refreshed for %s (valid %.0f s)", self._where, lifetime)


def _seconds_left(expiry: datetime | None) -> float:
    if expiry is None:
        return _UNKNOWN_LIFETIME_S
    if expiry.tzinfo is None:  # google-auth keeps naive UTC datetimes
        expiry = expiry.replace(tzinfo=UTC)
    return max((expiry - datetime.now(UTC)).total_seconds(), 0.0)


def _short(exc: BaseException) -> str:
    """google-auth's message (the endpoint's error and description), one line, bounded."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__
