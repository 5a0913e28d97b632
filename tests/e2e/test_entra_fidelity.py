"""The emulator's Microsoft Entra ID against the official clients: the ``openai`` SDK's ``AzureOpenAI`` with an
``azure_ad_token_provider`` from azure-identity, exactly as Microsoft documents it for Azure OpenAI.

azure-identity's own credentials (a client secret, a workload-identity federated token) get their tokens from
the emulator's Entra endpoints; the SDK sends them as ``Authorization: Bearer``; the emulator's Azure routes,
with key authentication disabled, accept those tokens and refuse keys, revoked and foreign tokens with the 401
the SDK raises as ``AuthenticationError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from azure.identity import ClientSecretCredential, WorkloadIdentityCredential, get_bearer_token_provider

from batch_cancel_emulator.testing import DEFAULT_KEY, Emulator
from tests.support.entra import TENANT

SCOPE = "https://cognitiveservices.azure.com/.default"
API_VERSION = "2024-10-21"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(tls=True) as emulator:
        emulator.set_entra_tokens(required=True)
        yield emulator


@pytest.fixture(autouse=True)
def _trust(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    assert emu.ca_file is not None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_file))


def _client(emu: Emulator, provider: Callable[[], str]) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=emu.url + "/azure", api_version=API_VERSION, azure_ad_token_provider=provider, max_retries=0
    )


def _secret_provider(emu: Emulator) -> Callable[[], str]:
    client_id, secret = str(uuid.uuid4()), "entra-sdk-secret-" + uuid.uuid4().hex
    emu.register_entra_app(TENANT, client_id, client_secret=secret)
    credential = ClientSecretCredential(
        TENANT, client_id, secret, authority=emu.entra_authority, disable_instance_discovery=True
    )
    return get_bearer_token_provider(credential, SCOPE)


def test_azure_openai_with_a_client_secret_token_provider(emu: Emulator) -> None:
    client = _client(emu, _secret_provider(emu))
    batch = emu.create_batch("azure", cancelling_polls=1)
    cancelled = client.batches.cancel(batch)
    retrieved = client.batches.retrieve(batch)
    assert isinstance(cancelled, openai.types.Batch) and (cancelled.id, cancelled.status) == (batch, "cancelling")
    assert retrieved.status == "cancelling"
    log = emu.requests(batch_id=batch)
    assert [(r["method"], r["status"], r["query"]) for r in log] == [
        ("POST", 200, f"api-version={API_VERSION}"),
        ("GET", 200, f"api-version={API_VERSION}"),
    ]
    assert all(r["headers"]["authorization"] == "[redacted]" and "api-key" not in r["headers"] for r in log)


def test_azure_openai_with_a_workload_identity_token_provider(emu: Emulator, tmp_path: Path) -> None:
    client_id = str(uuid.uuid4())
    federated = "eyJhbGciOiJSUzI1NiJ9.projected-token." + uuid.uuid4().hex
    emu.register_entra_app(TENANT, client_id, federated_token=federated)
    token_file = tmp_path / "token"
    token_file.write_text(federated)
    credential = WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=client_id,
        token_file_path=str(token_file),
        authority=emu.entra_authority,
        disable_instance_discovery=True,
    )
    client = _client(emu, get_bearer_token_provider(credential, SCOPE))
    batch = emu.create_batch("azure")
    assert client.batches.retrieve(batch).status == "in_progress"


def test_keys_revoked_and_foreign_tokens_are_the_sdks_authentication_error(emu: Emulator) -> None:
    batch = emu.create_batch("azure")
    by_key = openai.AzureOpenAI(
        api_key=DEFAULT_KEY, azure_endpoint=emu.url + "/azure", api_version=API_VERSION, max_retries=0
    )
    foreign = _client(emu, lambda: "eyJ0eXAiOiJKV1QifQ.not-issued-here.x")
    provider = _secret_provider(emu)
    client = _client(emu, provider)
    client.batches.retrieve(batch)
    emu.revoke_entra_tokens()  # azure-identity's cache still holds the token: the SDK sends it again
    for sdk in (by_key, foreign, client):
        with pytest.raises(openai.AuthenticationError) as refused:
            sdk.batches.retrieve(batch)
        assert refused.value.status_code == 401
        assert "Access token is missing, invalid" in refused.value.message
    assert [r["status"] for r in emu.requests(batch_id=batch)] == [200, 401, 401, 401]
