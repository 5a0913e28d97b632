"""How one account's requests are addressed and authenticated: ``AccountAccess``, built once per account at start.

Most providers take a static API key, so their access is a header dict computed once (no work per request).
Vertex AI, Bedrock and Azure accounts signing in with Microsoft Entra ID authenticate with cloud credentials that
expire and must be applied to each request as it is sent (an OAuth2 access token, a SigV4 signature over the final
URL and date), so their access carries an ``httpx.Auth``: httpx runs its flow for every attempt, retries included,
which is exactly where a fresh token or a new signature belongs. Vertex and Bedrock resources also live under
account settings (project and location, region), so their access carries the account's own URL prefix too.

The cloud libraries are optional extras (``batch-cancel-worker[google]``, ``[aws]``, ``[azure]``): they are
imported only when an account needs them, and their absence is a start-up ``ConfigError`` naming the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from worker.config import AccountConfig, ConfigError, ProviderConfig
from worker.providers.base import Dialect

__all__ = ["AccountAccess", "account_access", "require_extra"]


@dataclass(frozen=True, slots=True, repr=False)
class AccountAccess:
    """What ``ProviderClient`` adds to every request of one account.

    ``headers``: static key headers (None for credential accounts); ``auth``: a per-request flow (None for key
    accounts); ``url_prefix``: prepended to the dialect's path — empty for a key account (the provider's base URL
    applies), an absolute URL for a cloud account (its project/location or region decide where its jobs live).
    """

    headers: Mapping[str, str] | None
    auth: httpx.Auth | None = None
    url_prefix: str = ""

    def __repr__(self) -> str:  # the headers hold the key: name them, never show them
        names = sorted(self.headers) if self.headers is not None else None
        auth = type(self.auth).__name__ if self.auth is not None else None
        return f"AccountAccess(headers={names}, auth={auth}, url_prefix={self.url_prefix!r})"


def require_extra(extra: str, module: str, what: str) -> None:
    """Fail at start, naming the extra, when ``module`` (from ``batch-cancel-worker[extra]``) is not installed."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{what} needs the optional extra '{extra}': pip install 'batch-cancel-worker[{extra}]' "
            f"({module} is not installed; the default image leaves it out, see docs/providers.md)"
        ) from None


def account_access(
    where: tuple[str, str], config: ProviderConfig, acc: AccountConfig, dialect: Dialect, base_url: str | None
) -> AccountAccess:
    """Build the access of account ``where`` (provider, account), reading its key or credentials now, so a
    missing secret fails at start. ``base_url``: the configured override (the emulator, a private endpoint) or
    None for the public API.
    """
    where_text = f"providers.{where[0]}.accounts.{where[1]}"
    if config.dialect == "vertex":
        require_extra("google", "google.auth", f"{where_text} (dialect vertex)")
        from worker.providers.google_credentials import GoogleTokenAuth, load_google_credentials

        assert acc.project is not None and acc.location is not None  # ProviderConfig checked it
        root = base_url or f"https://{acc.location}-aiplatform.googleapis.com/v1"
        return AccountAccess(
            headers=None,
            auth=GoogleTokenAuth(load_google_credentials(acc, where_text), where, where_text),
            url_prefix=f"{root}/projects/{acc.project}/locations/{acc.location}",
        )
    if config.dialect == "bedrock":
        require_extra("aws", "botocore", f"{where_text} (dialect bedrock)")
        from worker.providers.aws_signing import SigV4Auth, load_aws_credentials

        assert acc.region is not None
        return AccountAccess(
            headers=None,
            auth=SigV4Auth(
                load_aws_credentials(acc, where_text),
                region=acc.region,
                service="bedrock",
                account=where,
                where=where_text,
            ),
            url_prefix=base_url or f"https://bedrock.{acc.region}.amazonaws.com",
        )
    if config.dialect == "azure" and acc.azure_credential is not None:
        require_extra("azure", "azure.identity", f"{where_text} (azure_credential {acc.azure_credential})")
        from worker.providers.azure_credentials import EntraTokenAuth, entra_credential_factory

        # the resource's own base URL applies, as for a key: only the credential differs
        return AccountAccess(
            headers=None, auth=EntraTokenAuth(entra_credential_factory(acc, where_text), where, where_text)
        )
    return AccountAccess(headers=dialect.auth_headers(acc.load_key().get_secret_value()))
