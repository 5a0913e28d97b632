"""Azure accounts' Microsoft Entra ID settings: each misfit is one clear start-up error naming the account."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from worker.config import ProvidersFile
from worker.errors import Rejected
from worker.providers.azure import AzureDialect

CLIENT = "00000000-0000-0000-0000-0000000000aa"
SP = {
    "azure_credential": "client_secret",
    "azure_tenant_id": "contoso.onmicrosoft.com",
    "azure_client_id": CLIENT,
    "azure_client_secret_env": "AZURE_CLIENT_SECRET",
}


def _validate(account: dict[str, Any], dialect: str = "azure") -> ProvidersFile:
    provider = {
        "dialect": dialect,
        "base_url": "https://contoso.openai.azure.com/openai/v1",
        "accounts": {"a": account},
    }
    return ProvidersFile.model_validate({"providers": {"p": provider}})


@pytest.mark.parametrize(
    "account",
    [
        SP,
        SP | {"azure_authority_host": "https://login.microsoftonline.us"},
        {"azure_credential": "workload_identity"},
        {"azure_credential": "workload_identity", "azure_tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"},
        {"azure_credential": "managed_identity"},
        {"azure_credential": "managed_identity", "azure_client_id": CLIENT},
        {k: v for k, v in SP.items() if k != "azure_client_secret_env"} | {"azure_client_secret_file": "/s/secret"},
        {k: v for k, v in SP.items() if k != "azure_client_secret_env"}
        | {"azure_credential": "certificate", "azure_certificate_file": "/s/cert.pem"},
    ],
)
def test_each_credential_kind_is_accepted(account: dict[str, Any]) -> None:
    assert _validate(account).providers["p"].accounts["a"].azure_credential == account["azure_credential"]


@pytest.mark.parametrize(
    ("account", "message"),
    [
        (SP | {"api_key_env": "K"}, "give an API key or azure_credential, not both"),
        ({"azure_tenant_id": "contoso"}, "azure_* settings need azure_credential"),
        ({k: v for k, v in SP.items() if k != "azure_tenant_id"}, "client_secret needs azure_tenant_id and"),
        (SP | {"azure_client_secret_file": "/s/x"}, "needs one of azure_client_secret_env or azure_client_secret_file"),
        ({"azure_credential": "managed_identity", "azure_tenant_id": "contoso"}, "not a setting of azure_credential"),
        (SP | {"azure_certificate_file": "/s/c.pem"}, "azure_certificate_file: not a setting of azure_credential"),
        (
            {"azure_credential": "certificate", "azure_tenant_id": "t", "azure_client_id": CLIENT},
            "certificate needs azure_certificate_file",
        ),
        (
            {"azure_credential": "managed_identity", "azure_authority_host": "https://login.microsoftonline.us"},
            "a managed identity gets its tokens from the platform",
        ),
        (SP | {"azure_authority_host": "http://login.example"}, "must be https"),
        (SP | {"azure_authority_host": "https://login.example/tenant"}, "has no path"),
        (SP | {"azure_client_id": "not-a-guid"}, "azure_client_id"),
        (SP | {"azure_tenant_id": "../../etc"}, "azure_tenant_id"),
        (SP | {"azure_client_secret": "hunter2"}, "azure_client_secret"),  # a secret itself is no setting
        ({"azure_credential": "browser"}, "azure_credential"),
    ],
)
def test_misfits_are_refused_naming_the_account(account: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        _validate(account)
    assert message in str(error.value)


def test_entra_settings_belong_to_azure_only() -> None:
    with pytest.raises(ValidationError, match="azure_credential: not a setting of dialect openai"):
        _validate({"api_key_env": "K", "azure_credential": "managed_identity"}, dialect="openai")


def test_an_azure_401_is_credentials_refused() -> None:
    body = {"error": {"code": "401", "message": "Unauthorized. Access token is missing, invalid"}}
    refused = AzureDialect().classify(401, {}, body, "cancel")
    assert isinstance(refused, Rejected)
    assert (refused.http_status, refused.code) == (401, "credentials_refused")
    assert "Access token is missing" in refused.message
    forbidden = AzureDialect().classify(
        403, {}, {"error": {"code": "PermissionDenied", "message": "no role"}}, "cancel"
    )
    assert isinstance(forbidden, Rejected) and forbidden.code == "PermissionDenied"
