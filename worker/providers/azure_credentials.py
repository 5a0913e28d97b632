"""Microsoft Entra ID access tokens for Azure OpenAI, minted by azure-identity (extra ``[azure]``).

An ``azure`` account with ``azure_credential`` signs in as one of four identities, each an azure-identity
credential: ``workload_identity`` (AKS: the projected service-account token the workload-identity webhook
mounts, exchanged at Entra as a federated client assertion), ``managed_identity`` (the platform's token endpoint:
IMDS, App Service), ``client_secret`` or ``certificate`` (a service principal; the secret or PEM is read by
reference, from a variable or a Secret mount, never from the providers file). The token is for the Cognitive
Services scope, the one Azure OpenAI's data plane accepts.

``RefreshingBearerAuth`` (``worker.providers.bearer``) decides when: before expiry, one refresh shared by
concurrent requests, in a thread, one retry with a new token after a 401 (a second 401 is ``rejected``,
``credentials_refused``: ``AzureDialect`` classifies it). azure-identity caches tokens itself and hands back the
cached one while it is fresh; after a 401 that cache is exactly what must not answer, so a renewal builds the
credential anew (an empty cache: the token endpoint is asked).

What Entra answers is sorted the way the Google path sorts google-auth's: a refusal (``invalid_client``, an
unknown tenant, an unassigned managed identity) is ``Rejected`` with Entra's reason; a token endpoint that cannot
be reached, or answers 429/5xx after azure-core's own retries, is ``Retryable`` within the call's budget.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import (
    CertificateCredential,
    ClientSecretCredential,
    CredentialUnavailableError,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)

from worker.config import AccountConfig, ConfigError
from worker.errors import Rejected, Retryable
from worker.providers.bearer import RefreshingBearerAuth, short

__all__ = ["COGNITIVE_SERVICES", "EntraTokenAuth", "entra_credential_factory"]

#: Never below WARNING, whatever BCW_LOG_LEVEL says: azure-core logs request headers at INFO and MSAL's DEBUG
#: logs describe token exchanges.
for _name in ("azure", "msal"):
    logging.getLogger(_name).setLevel(logging.WARNING)

#: The scope Azure OpenAI's data plane accepts (its docs: "Authenticate with Microsoft Entra ID").
COGNITIVE_SERVICES = "https://cognitiveservices.azure.com/.default"
_TOKEN_TIMEOUT_S = 10
CredentialFactory = Callable[[], TokenCredential]


def entra_credential_factory(acc: AccountConfig, where: str) -> CredentialFactory:
    """Check the account's identity now (a missing secret, certificate or token file fails at start) and return
    what builds its credential, called once here and again for every renewal after a refused token."""
    kind = acc.azure_credential
    # A connection that fails is retried by the worker, within the call's budget (azure-core would otherwise try
    # four times, with backoff, inside one refresh); statuses keep azure-core's own retries (Entra's 5xx, 429).
    options: dict[str, Any] = {"retry_connect": 0, "retry_read": 0, "connection_timeout": _TOKEN_TIMEOUT_S}
    if acc.azure_authority_host is not None:
        # A host named here is the operator's word (a sovereign cloud, a private endpoint, a test's emulator):
        # MSAL would otherwise ask login.microsoftonline.com whether it is Microsoft's.
        options |= {"authority": str(acc.azure_authority_host).rstrip("/"), "disable_instance_discovery": True}
    if kind == "client_secret":
        secret = acc.load_azure_client_secret()
        tenant, client = _required(acc)

        def client_secret() -> TokenCredential:
            return ClientSecretCredential(tenant, client, secret.get_secret_value(), **options)

        factory: CredentialFactory = client_secret
    elif kind == "certificate":
        tenant, client = _required(acc)
        path = str(acc.azure_certificate_file)

        def certificate() -> TokenCredential:
            return CertificateCredential(tenant, client, certificate_path=path, **options)

        factory = certificate
    elif kind == "workload_identity":
        settings = _workload_settings(acc, where)

        def workload_identity() -> TokenCredential:
            return WorkloadIdentityCredential(**settings, **options)

        factory = workload_identity
    elif kind == "managed_identity":
        client_id = acc.azure_client_id

        def managed_identity() -> TokenCredential:
            # IMDS keeps azure-identity's own retry settings: it asks for long retries while the node's endpoint
            # is being upgraded (410), which the worker's budget would cut short.
            return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()

        factory = managed_identity
    else:
        raise ConfigError(f"{where}: unknown azure_credential {kind!r}")
    try:
        factory().close()  # type: ignore[attr-defined]  # every azure-identity credential has close()
    except (ValueError, OSError) as exc:  # a certificate file that is missing or holds no key, a bad authority
        raise ConfigError(f"{where}: azure_credential {kind}: {short(exc)}") from None
    return factory


def _required(acc: AccountConfig) -> tuple[str, str]:
    assert acc.azure_tenant_id is not None and acc.azure_client_id is not None  # AccountConfig checked it
    return acc.azure_tenant_id, acc.azure_client_id


def _workload_settings(acc: AccountConfig, where: str) -> dict[str, str]:
    """Tenant, client and token file: the account's, else what the AKS webhook injects into the pod."""
    settings = {
        "tenant_id": acc.azure_tenant_id or os.environ.get("AZURE_TENANT_ID", ""),
        "client_id": acc.azure_client_id or os.environ.get("AZURE_CLIENT_ID", ""),
        "token_file_path": str(acc.azure_federated_token_file or os.environ.get("AZURE_FEDERATED_TOKEN_FILE", "")),
    }
    missing = [
        f"{setting} (or {env})"
        for setting, key, env in (
            ("azure_tenant_id", "tenant_id", "AZURE_TENANT_ID"),
            ("azure_client_id", "client_id", "AZURE_CLIENT_ID"),
            ("azure_federated_token_file", "token_file_path", "AZURE_FEDERATED_TOKEN_FILE"),
        )
        if not settings[key]
    ]
    if missing:
        raise ConfigError(
            f"{where}: azure_credential workload_identity needs {', '.join(missing)}; on AKS the workload-identity "
            "webhook sets them for a pod labelled azure.workload.identity/use: 'true' (docs/providers.md)"
        )
    path = settings["token_file_path"]
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{where}: cannot read the federated token file {path}")
    return settings


class EntraTokenAuth(RefreshingBearerAuth):
    """Azure OpenAI's bearer token from an azure-identity credential (see the module docstring)."""

    kind = "Entra access token"

    def __init__(self, factory: CredentialFactory, account: tuple[str, str], where: str) -> None:
        super().__init__(account, where)
        self._factory = factory
        self._credential: TokenCredential | None = None

    def close(self) -> None:
        if self._credential is not None:
            self._credential.close()  # type: ignore[attr-defined]
            self._credential = None

    def _mint(self, renew: bool) -> tuple[str, float]:
        if renew or self._credential is None:
            self.close()
            self._credential = self._factory()
        try:
            token = self._credential.get_token(COGNITIVE_SERVICES)
        except CredentialUnavailableError as exc:
            if _unreachable(exc):
                raise Retryable(f"Entra token source unreachable: {short(exc)}") from None
            # the platform answered (no such identity here) or the credential cannot work in this pod
            raise Rejected(None, "credentials_refused", f"Entra: {short(exc)}") from None
        except ClientAuthenticationError as exc:
            if _refused(exc) and not _unreachable(exc):
                raise Rejected(None, "credentials_refused", f"Entra refused the token request: {short(exc)}") from None
            raise Retryable(f"Entra token endpoint: {short(exc)}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise Retryable(f"Entra token endpoint unreachable: {short(exc)}") from None
        except ValueError as exc:  # MSAL: the tenant's OpenID configuration was refused (an unknown tenant)
            raise Rejected(None, "credentials_refused", f"Entra: {short(exc)}") from None
        except RuntimeError as exc:  # MSAL: the OpenID configuration could not be read (transient)
            raise Retryable(f"Entra: {short(exc)}") from None
        return token.token, max(token.expires_on - time.time(), 0.0)


def _unreachable(exc: BaseException) -> bool:
    """Whether a connection failure is behind ``exc`` (azure-identity wraps it, sometimes twice)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ServiceRequestError | ServiceResponseError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _refused(exc: BaseException | None) -> bool:
    """An answer that will not change on a retry: a 4xx other than 429, or a refusal with no status to judge by
    (azure-identity raises those for an answer it could not use). Anything that is not an answer is not one."""
    if not isinstance(exc, HttpResponseError):
        return False
    status = exc.status_code
    return status is None or (400 <= status < 500 and status != 429)
