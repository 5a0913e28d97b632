"""Microsoft Entra ID for Azure accounts over real HTTP: azure-identity's own credentials against the emulator.

The emulator serves Entra's OpenID configuration and token endpoint on its TLS listener (MSAL insists on https;
the throw-away CA is trusted through ``REQUESTS_CA_BUNDLE``, which azure-core's transport reads) and IMDS on plain
http; its Azure routes accept only the tokens it issued. Each test runs the worker's real credential code
(``worker.providers.azure_credentials`` and ``bearer``) through ``ProviderClient``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from batch_cancel_emulator.testing import Emulator
from tests.support.cloud import make_entra_certificate
from tests.support.entra import TENANT, entra_provider
from worker.config import ConfigError, ProvidersFile
from worker.errors import GaveUp, Rejected
from worker.providers import ProviderClient, build_clients


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(tls=True) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _trust_and_reset(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    assert emu.ca_file is not None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_file))
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"):
        monkeypatch.delenv(name, raising=False)
    emu.set_entra_tokens(required=True)  # the resource has key authentication disabled
    yield
    emu.set_entra_tokens()


def _client_id() -> str:
    return str(uuid.uuid4())


def _azure(emu: Emulator, account: dict[str, Any], **provider: Any) -> ProviderClient:
    config = {"dialect": "azure", "base_url": emu.base_url("azure"), "accounts": {"a": account}, **provider}
    return build_clients(ProvidersFile.model_validate({"providers": {"az": config}}))["az"]


def _secret_account(emu: Emulator, monkeypatch: pytest.MonkeyPatch, *, secret: str | None = None) -> dict[str, Any]:
    client_id = _client_id()
    real = "entra-secret-" + uuid.uuid4().hex
    emu.register_entra_app(TENANT, client_id, client_secret=real)
    monkeypatch.setenv("E2E_AZURE_SECRET", secret or real)
    return {
        "azure_credential": "client_secret",
        "azure_tenant_id": TENANT,
        "azure_client_id": client_id,
        "azure_client_secret_env": "E2E_AZURE_SECRET",
        "azure_authority_host": emu.entra_authority,
    }


def _tokens(emu: Emulator, since: float) -> list[dict[str, Any]]:
    return [r for r in emu.requests(dialect="entra") if r["t_mono"] >= since and r["op"] in ("token", "imds")]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def azure(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ProviderClient]:
    client = _azure(emu, _secret_account(emu, monkeypatch))
    yield client
    await client.aclose()


async def test_a_client_secret_token_serves_concurrent_requests(emu: Emulator, azure: ProviderClient) -> None:
    start = time.monotonic()
    refreshes = _sample("bcw_credential_refreshes_total", provider="az", account="a")
    batches = [emu.create_batch("azure") for _ in range(20)]
    snapshots = await asyncio.gather(*(azure.retrieve("a", b) for b in batches))
    assert {s.provider_status for s in snapshots} == {"in_progress"}
    assert [r["status"] for r in _tokens(emu, start)] == [200]  # one token, shared under the lock
    log = [r for b in batches for r in emu.requests(batch_id=b)]
    assert {r["headers"]["authorization"] for r in log} == {"[redacted]"} and "api-key" not in log[0]["headers"]
    assert _sample("bcw_credential_refreshes_total", provider="az", account="a") == refreshes + 1
    age = _sample("bcw_credential_age_seconds", provider="az", account="a")
    assert 0 <= age < 60


async def test_a_certificate_signs_the_assertion(emu: Emulator, tmp_path: Path) -> None:
    client_id = _client_id()
    certificate = make_entra_certificate(tmp_path)
    emu.register_entra_app(TENANT, client_id, certificate_pem=certificate.certificate_pem)
    account = {
        "azure_credential": "certificate",
        "azure_tenant_id": TENANT,
        "azure_client_id": client_id,
        "azure_certificate_file": str(certificate.path),
        "azure_authority_host": emu.entra_authority,
    }
    client = _azure(emu, account)
    batch = emu.create_batch("azure")
    start = time.monotonic()
    result = await client.cancel("a", batch)
    await client.aclose()
    assert result.snapshot.provider_status == "cancelling"
    assert [r["status"] for r in _tokens(emu, start)] == [200]
    other = make_entra_certificate(tmp_path, name="not-registered")
    account["azure_certificate_file"] = str(other.path)
    client = _azure(emu, account)
    with pytest.raises(Rejected) as refused:
        await client.retrieve("a", batch)
    await client.aclose()
    assert refused.value.code == "credentials_refused" and "AADSTS700213" in refused.value.message


async def test_workload_identity_from_the_aks_webhook_environment(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the AKS workload-identity webhook gives a labelled pod: AZURE_TENANT_ID, AZURE_CLIENT_ID and a
    projected service-account token in AZURE_FEDERATED_TOKEN_FILE, exchanged as a federated assertion."""
    client_id = _client_id()
    federated = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token." + uuid.uuid4().hex
    emu.register_entra_app(TENANT, client_id, federated_token=federated)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(federated)
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", client_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    client = _azure(emu, {"azure_credential": "workload_identity", "azure_authority_host": emu.entra_authority})
    batch = emu.create_batch("azure", cancelling_polls=0)
    result = await client.cancel("a", batch)
    snapshot = await client.retrieve("a", batch)
    await client.aclose()
    assert (result.snapshot.provider_status, snapshot.provider_status) == ("cancelling", "cancelled")
    assert [r["status"] for r in emu.requests(batch_id=batch)] == [200, 200]


async def test_a_managed_identity_asks_imds(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    client_id = _client_id()
    emu.assign_managed_identity(client_id)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emu.imds_host)
    client = _azure(emu, {"azure_credential": "managed_identity", "azure_client_id": client_id})
    start = time.monotonic()
    batch = emu.create_batch("azure")
    snapshot = await client.retrieve("a", batch)
    await client.aclose()
    assert snapshot.provider_status == "in_progress"
    (imds,) = _tokens(emu, start)
    assert (imds["op"], imds["status"], imds["headers"]["metadata"]) == ("imds", 200, "true")
    unassigned = _azure(emu, {"azure_credential": "managed_identity", "azure_client_id": _client_id()})
    failures = _sample("bcw_credential_refresh_failures_total", provider="az", account="a", reason="refused")
    with pytest.raises(Rejected) as refused:
        await unassigned.retrieve("a", batch)
    await unassigned.aclose()
    assert refused.value.code == "credentials_refused" and "Identity not found" in refused.value.message
    assert _sample("bcw_credential_refresh_failures_total", provider="az", account="a", reason="refused") == (
        failures + 1
    )


async def test_a_slow_token_endpoint_does_not_hold_the_event_loop(emu: Emulator, azure: ProviderClient) -> None:
    """azure-identity's refresh is blocking I/O: it runs in a thread while the loop serves everything else."""
    emu.set_entra_tokens(required=True, delay_s=1.0)
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    start = time.monotonic()
    try:
        snapshot = await azure.retrieve("a", emu.create_batch("azure"))
    finally:
        beat.cancel()
    assert snapshot.provider_status == "in_progress"
    (token,) = _tokens(emu, start)
    assert token["t_done_mono"] - token["t_mono"] >= 1.0
    assert ticks >= 20  # a refresh on the loop would have frozen it for that second: one tick, not dozens


async def test_tokens_are_refreshed_before_they_expire(emu: Emulator, azure: ProviderClient) -> None:
    """Two-second tokens: each is renewed with a quarter of its life left, so the API never refuses one."""
    emu.set_entra_tokens(2, required=True)
    start = time.monotonic()
    batch = emu.create_batch("azure")
    deadline = time.monotonic() + 30
    while len(_tokens(emu, start)) < 4:
        assert time.monotonic() < deadline, "the token was not refreshed"
        await azure.retrieve("a", batch)
        await asyncio.sleep(0.05)  # pacing between polls, as a follow has; the loop waits on the token count
    statuses = [r["status"] for r in emu.requests(batch_id=batch)]
    assert statuses and set(statuses) == {200}
    issued = [r["t_mono"] for r in _tokens(emu, start)]
    assert all(later - earlier < 2.0 for earlier, later in itertools.pairwise(issued))


async def test_a_revoked_token_gets_one_retry_with_a_new_one(emu: Emulator, azure: ProviderClient) -> None:
    batch = emu.create_batch("azure")
    await azure.retrieve("a", batch)
    emu.revoke_entra_tokens()
    start = time.monotonic()
    snapshot = await azure.retrieve("a", batch)
    assert snapshot.provider_status == "in_progress"
    assert [r["status"] for r in emu.requests(batch_id=batch)] == [200, 401, 200]
    # azure-identity's cache still held the revoked token: the credential was rebuilt, so Entra was asked
    assert [r["status"] for r in _tokens(emu, start)] == [200]


async def test_a_token_refused_again_is_rejected_after_one_retry(emu: Emulator, azure: ProviderClient) -> None:
    emu.set_entra_tokens(required=True, accept=False)
    start = time.monotonic()
    batch = emu.create_batch("azure")
    with pytest.raises(Rejected) as refused:
        await azure.cancel("a", batch)
    assert (refused.value.http_status, refused.value.code) == (401, "credentials_refused")
    assert "Access token is missing, invalid" in refused.value.message
    assert [r["status"] for r in emu.requests(batch_id=batch)] == [401, 401]
    assert len(_tokens(emu, start)) == 2  # the first token, and one newly minted for the single retry


async def test_a_wrong_client_secret_is_rejected_with_entras_reason(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _azure(emu, _secret_account(emu, monkeypatch, secret="not-the-client-secret"))
    start = time.monotonic()
    batch = emu.create_batch("azure")
    with pytest.raises(Rejected) as refused:
        await client.cancel("a", batch)
    await client.aclose()
    assert refused.value.code == "credentials_refused" and "AADSTS7000215" in refused.value.message
    assert emu.requests(batch_id=batch) == []  # nothing reached the API without a token
    assert [r["status"] for r in _tokens(emu, start)] == [401]  # and the refusal was not retried
    assert "not-the-client-secret" not in str(refused.value)


async def test_an_unreachable_authority_is_retried_within_the_budget(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = _secret_account(emu, monkeypatch) | {"azure_authority_host": "https://127.0.0.1:9"}  # refused
    client = _azure(emu, account, retry_budget_s=1.5)
    batch = emu.create_batch("azure")
    failures = _sample("bcw_credential_refresh_failures_total", provider="az", account="a", reason="unreachable")
    with pytest.raises(GaveUp) as gave_up:
        await client.retrieve("a", batch)
    await client.aclose()
    assert gave_up.value.attempts > 1 and "Entra" in gave_up.value.cause
    assert emu.requests(batch_id=batch) == []
    assert (
        _sample("bcw_credential_refresh_failures_total", provider="az", account="a", reason="unreachable")
        >= failures + 2
    )


async def test_an_api_key_is_refused_where_key_authentication_is_disabled(emu: Emulator) -> None:
    """The emulator's ``required`` switch is real: the default key no longer opens the Azure routes."""
    client = _azure(emu, {"api_key_env": "E2E_AZURE_KEY"})
    batch = emu.create_batch("azure")
    with pytest.raises(Rejected) as refused:
        await client.retrieve("a", batch)
    await client.aclose()
    assert (refused.value.http_status, refused.value.code) == (401, "credentials_refused")


@pytest.fixture
def _azure_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2E_AZURE_KEY", "sk-emulator")


pytestmark = pytest.mark.usefixtures("_azure_key")


# --- start-up checks: each mistake is one ConfigError naming the account ----------------------------------------


def _config_error(emu: Emulator, account: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        _azure(emu, account)
    return str(error.value)


def test_a_missing_client_secret_fails_at_start(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    account = _secret_account(emu, monkeypatch)
    monkeypatch.delenv("E2E_AZURE_SECRET")
    assert _config_error(emu, account) == "environment variable E2E_AZURE_SECRET is not set or empty"


def test_workload_identity_without_the_webhook_environment_fails_at_start(emu: Emulator) -> None:
    message = _config_error(emu, {"azure_credential": "workload_identity"})
    assert message.startswith("providers.az.accounts.a: azure_credential workload_identity needs azure_tenant_id")
    assert "AZURE_FEDERATED_TOKEN_FILE" in message


def test_a_certificate_file_without_a_key_fails_at_start(emu: Emulator, tmp_path: Path) -> None:
    pem = tmp_path / "no-key.pem"
    pem.write_text(make_entra_certificate(tmp_path).certificate_pem)  # the certificate alone
    account = {
        "azure_credential": "certificate",
        "azure_tenant_id": TENANT,
        "azure_client_id": _client_id(),
        "azure_certificate_file": str(pem),
    }
    assert _config_error(emu, account).startswith("providers.az.accounts.a: azure_credential certificate: ")


def test_a_missing_extra_stops_the_start_naming_it(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # import azure.identity now raises ImportError
    message = _config_error(emu, {"azure_credential": "managed_identity"})
    assert "needs the optional extra 'azure'" in message and "batch-cancel-worker[azure]" in message
    assert message.startswith("providers.az.accounts.a (azure_credential managed_identity)")


def test_check_config_validates_every_entra_account_without_asking_for_a_token(emu: Emulator, tmp_path: Path) -> None:
    """`batch-cancel-worker check-config`, as an operator runs it: every kind passes; a missing secret is one line
    naming it, exit 2. Neither asks Entra for a token (that waits for the first command)."""
    setup = entra_provider(emu, tmp_path)
    providers = tmp_path / "providers.yaml"
    providers.write_text("providers:\n" + setup.yaml)
    env = {**os.environ, **setup.env, "BCW_PROVIDERS_FILE": str(providers), "BCW_LOG_FORMAT": "console"}
    before = len(emu.requests(dialect="entra"))

    def check(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "worker", "check-config"]
        return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120, check=False)

    ok = check(env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == (
        "configuration OK: azure (azure: secret, shortlived, wrongsecret, certificate, workload, managed)"
    )
    missing = check({k: v for k, v in env.items() if k != "E2E_AZURE_SECRET"})
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        "batch-cancel-worker: configuration error: environment variable E2E_AZURE_SECRET is not set or empty"
    )
    assert len(emu.requests(dialect="entra")) == before
    for secret in setup.secrets:
        assert secret not in ok.stdout + ok.stderr + missing.stdout + missing.stderr
