"""AWS Signature Version 4 for Bedrock: botocore signs, with credentials from the standard AWS chain (extra ``[aws]``).

botocore's credential chain finds what the pod has: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and a session
token), a profile of the shared config files, an IRSA web-identity token (``AWS_ROLE_ARN`` +
``AWS_WEB_IDENTITY_TOKEN_FILE``, what EKS injects for a service account annotated with a role), ECS or EC2
instance roles. Temporary credentials are ``RefreshableCredentials``: botocore renews them ahead of their expiry;
that renewal is a blocking STS call, so it runs in a thread, one at a time per account, only when botocore says
one is due (every other request signs with what is in memory).

Each attempt is signed afresh as httpx sends it (``httpx.Auth``): the signature covers the method, the final
URL, the ``host`` header, ``x-amz-date`` and the body's hash, so a retry a minute later carries a new date
instead of a signature AWS would call expired. A signature AWS refuses (403 ``InvalidSignatureException``,
``UnrecognizedClientException``, ``ExpiredTokenException``) is the dialect's to classify: ``rejected``.

Renewals and failed renewals are counted per account and the temporary credentials' age exported, as for the
bearer tokens (``worker.providers.bearer``); static keys never renew, so they have no age.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import botocore.auth
import botocore.credentials
import botocore.exceptions
import botocore.session
import httpx
from botocore.awsrequest import AWSRequest

from worker.config import AccountConfig, ConfigError
from worker.errors import Rejected, Retryable
from worker.telemetry import metrics

__all__ = ["SigV4Auth", "load_aws_credentials"]

log = logging.getLogger("worker.providers.aws")
#: Never below WARNING, whatever BCW_LOG_LEVEL says: botocore's DEBUG logs print what a secret can be part of
#: (canonical requests with session tokens, token-endpoint exchanges).
logging.getLogger("botocore").setLevel(logging.WARNING)

_SIGNATURE_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")
_TRANSIENT = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)


def load_aws_credentials(acc: AccountConfig, where: str) -> botocore.credentials.Credentials:
    """The first credentials the standard chain (or the account's profile) finds; none at all fails at start."""
    try:
        session = botocore.session.Session(profile=acc.aws_profile)
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(f"{where}: AWS credentials: {exc}") from None
    if credentials is None:
        raise ConfigError(
            f"{where}: no AWS credentials found (environment, profile"
            f"{' ' + acc.aws_profile if acc.aws_profile else ''}, web identity/IRSA, container or instance role)"
        )
    return credentials


class SigV4Auth(httpx.Auth):
    """Signs each request for ``service`` in ``region`` (see the module docstring)."""

    def __init__(
        self,
        credentials: botocore.credentials.Credentials,
        *,
        region: str,
        service: str,
        account: tuple[str, str],
        where: str,
    ) -> None:
        self._credentials = credentials
        self._region = region
        self._service = service
        self._account = account
        self._where = where
        self._lock = asyncio.Lock()
        metrics.CREDENTIALS.watch(*account)
        if isinstance(credentials, botocore.credentials.RefreshableCredentials) and not isinstance(
            credentials,
            botocore.credentials.DeferredRefreshableCredentials,  # IRSA: fetched at the first request
        ):
            metrics.CREDENTIALS.refreshed(*account)  # the chain obtained them at start (load_aws_credentials)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        signer = botocore.auth.SigV4Auth(await self._frozen(), self._service, self._region)
        signed = AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers={"host": request.headers["host"]}
        )
        signer.add_auth(signed)
        for name in _SIGNATURE_HEADERS:
            value = signed.headers.get(name)
            if value is not None:
                request.headers[name] = value
        yield request

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise NotImplementedError("SigV4Auth is for the worker's async client only")

    async def _frozen(self) -> botocore.credentials.ReadOnlyCredentials:
        credentials = self._credentials
        if isinstance(credentials, botocore.credentials.RefreshableCredentials) and credentials.refresh_needed():
            async with self._lock:
                if credentials.refresh_needed():
                    await self._renew(credentials)
        return credentials.get_frozen_credentials()

    async def _renew(self, credentials: botocore.credentials.RefreshableCredentials) -> None:
        try:
            await asyncio.to_thread(credentials.get_frozen_credentials)
        except _TRANSIENT as exc:
            metrics.CREDENTIALS.failed(*self._account, "unreachable")
            log.warning("AWS credential refresh failed for %s: %s", self._where, exc)
            raise Retryable(f"AWS credential refresh: {exc}") from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            metrics.CREDENTIALS.failed(*self._account, "refused")
            log.warning("AWS credential refresh refused for %s: %s", self._where, exc)
            raise Rejected(None, "credentials_refused", f"AWS credential refresh refused: {exc}") from None
        metrics.CREDENTIALS.refreshed(*self._account)
        log.info("AWS credentials refreshed for %s", self._where)
