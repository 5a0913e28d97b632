"""Google OAuth2 access tokens for Vertex AI, minted and refreshed by google-auth (extra ``[google]``).

An account names a service-account key file (a Secret mount) or Application Default Credentials (GKE workload
identity, the metadata server, ``GOOGLE_APPLICATION_CREDENTIALS``). google-auth does the OAuth2 work: signing
the service account's JWT assertion, calling the token endpoint the key file names, reading the metadata server.
``RefreshingBearerAuth`` (``worker.providers.bearer``) decides *when* (before expiry, one refresh shared by
concurrent requests, in a thread, one retry after a 401); this module mints: a refresh the token endpoint refuses
(``invalid_grant``: a deleted key, a disabled account) is ``rejected`` with the endpoint's reason, one that
failed in transit is retried within the call's retry budget.

google-auth speaks to the token endpoint through its transport interface; ``_HttpxRequest`` implements it with a
synchronous httpx client, so httpx stays the one HTTP client (and no ``requests`` is needed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
from worker.providers.bearer import RefreshingBearerAuth, short

__all__ = ["CLOUD_PLATFORM", "GoogleTokenAuth", "load_google_credentials"]

#: Never below WARNING, whatever BCW_LOG_LEVEL says: google's DEBUG logs print what a secret can be part of
#: (canonical requests with session tokens, token-endpoint exchanges).
logging.getLogger("google").setLevel(logging.WARNING)

#: The scope Vertex AI's REST API needs (its docs for ``batchPredictionJobs.cancel``).
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
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
        raise ConfigError(f"{where}: no Application Default Credentials: {short(exc)}") from None
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


class GoogleTokenAuth(RefreshingBearerAuth):
    """Vertex AI's bearer token from google-auth credentials (see the module docstring)."""

    kind = "google access token"

    def __init__(self, credentials: google.auth.credentials.Credentials, account: tuple[str, str], where: str) -> None:
        super().__init__(account, where)
        self._credentials = credentials
        self._request = _HttpxRequest()

    def close(self) -> None:
        """Close the token endpoint's connections (``ProviderClient.aclose``)."""
        self._request.close()

    def _mint(self, renew: bool) -> tuple[str, float]:
        # google-auth keeps no cache of its own: every refresh mints, so ``renew`` needs nothing more
        try:
            self._credentials.refresh(self._request)  # type: ignore[no-untyped-call]
        except google.auth.exceptions.RefreshError as exc:
            if exc.retryable:
                raise Retryable(f"google token endpoint: {short(exc)}") from None
            raise Rejected(None, "credentials_refused", f"google token refresh refused: {short(exc)}") from None
        except google.auth.exceptions.TransportError as exc:
            raise Retryable(f"google token endpoint unreachable: {short(exc)}") from None
        token = self._credentials.token
        return (token if isinstance(token, str) else ""), _seconds_left(self._credentials.expiry)


def _seconds_left(expiry: datetime | None) -> float:
    if expiry is None:
        return _UNKNOWN_LIFETIME_S
    if expiry.tzinfo is None:  # google-auth keeps naive UTC datetimes
        expiry = expiry.replace(tzinfo=UTC)
    return max((expiry - datetime.now(UTC)).total_seconds(), 0.0)
