"""``RefreshingBearerAuth``: an OAuth2 access token on every request, kept fresh; shared by Google and Entra ID.

Vertex AI (google-auth) and Azure OpenAI with Microsoft Entra ID (azure-identity) both take a bearer token that
lives about an hour. The cloud library mints it; this class decides *when*, the same way for both:

* A token is refreshed before it expires: once less than a quarter of its lifetime, at most 5 minutes, remains
  (an hour's token at 55 minutes). Concurrent requests share one refresh (a lock); requests with a fresh token
  never wait for it.
* The libraries' refresh is blocking I/O, so it runs in a thread; the event loop keeps serving other accounts.
* A request the API refuses with 401 gets exactly one more try with a newly minted token (the token may have
  been revoked, or the clocks disagree); a second 401 is the answer the dialect classifies: ``rejected``.
* A refresh the identity provider refuses is ``Rejected`` (``credentials_refused``) with its reason; one that
  failed in transit is ``Retryable`` within the call's retry budget. Subclasses raise those from ``_mint``.

Every refresh and every failed one is counted per account (``bcw_credential_refreshes_total``,
``bcw_credential_refresh_failures_total``), and the token's age is exported (``bcw_credential_age_seconds``):
what an operator watches to see an identity going bad before its last token expires (docs/runbook.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from worker.errors import Rejected, Retryable
from worker.telemetry import metrics

__all__ = ["RefreshingBearerAuth", "short"]

_MAX_MARGIN_S = 300.0


class RefreshingBearerAuth(httpx.Auth):
    """``Authorization: Bearer <access token>`` on each request (see the module docstring).

    ``account``: (provider, account) for the metrics; ``where``: the account's place in the providers file, for
    logs and errors. Subclasses implement ``_mint`` and may override ``close``.
    """

    #: What the logs call the token ("google access token", "Entra access token").
    kind = "access token"

    def __init__(self, account: tuple[str, str], where: str) -> None:
        self._account = account
        self._where = where
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0  # time.monotonic() after which the token counts as about to expire
        metrics.CREDENTIALS.watch(*account)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._fresh_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:  # revoked, or the clocks disagree: one retry with a newly minted token
            token = await self._fresh_token(refused=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise NotImplementedError(f"{type(self).__name__} is for the worker's async client only")

    def close(self) -> None:
        """Release what the token source holds open (``ProviderClient.aclose``)."""

    def _mint(self, renew: bool) -> tuple[str, float]:
        """A token and its remaining lifetime in seconds; blocking (runs in a thread). ``renew``: the API refused
        the last token, so a cached one will not do. Raises ``Rejected``/``Retryable``."""
        raise NotImplementedError

    async def _fresh_token(self, refused: str | None = None) -> str:
        token = self._token
        if token is not None and token != refused and time.monotonic() < self._refresh_at:
            return token
        async with self._lock:
            # another request may have refreshed while this one waited for the lock
            if self._token is not None and self._token != refused and time.monotonic() < self._refresh_at:
                return self._token
            await self._refresh(renew=refused is not None and self._token == refused)
            assert self._token is not None
            return self._token

    async def _refresh(self, *, renew: bool) -> None:
        started = time.monotonic()
        try:
            token, lifetime = await asyncio.to_thread(self._mint, renew)
        except Rejected as exc:
            metrics.CREDENTIALS.failed(*self._account, "refused")
            logging.getLogger(type(self).__module__).warning(
                "%s refresh refused for %s: %s", self.kind, self._where, exc.message
            )
            raise
        except Retryable as exc:
            metrics.CREDENTIALS.failed(*self._account, "unreachable")
            logging.getLogger(type(self).__module__).warning(
                "%s refresh failed for %s: %s", self.kind, self._where, exc.cause
            )
            raise
        if not token:
            metrics.CREDENTIALS.failed(*self._account, "refused")
            raise Rejected(None, "credentials_refused", f"the {self.kind} source answered without a token")
        if token != self._token:  # a library may hand back its cached token, still valid: not a refresh
            metrics.CREDENTIALS.refreshed(*self._account)
            logging.getLogger(type(self).__module__).info(
                "%s refreshed for %s (valid %.0f s)", self.kind, self._where, lifetime
            )
        self._token = token
        self._refresh_at = started + lifetime - min(_MAX_MARGIN_S, lifetime / 4)


def short(exc: BaseException) -> str:
    """A library's message (the endpoint's error and description), one line, bounded."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__
