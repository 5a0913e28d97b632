"""The worker process end to end for Azure OpenAI with Microsoft Entra ID: broker, worker, emulator, azure-identity.

One worker serves the module; its providers file holds one Azure account per Entra credential kind
(``tests.support.entra``), its environment what an AKS pod would have. The emulator is this module's own (TLS for
Entra's endpoints), with key authentication disabled on its Azure routes, so every call below was authorized by a
token azure-identity obtained from it; changing the token lifetime here cannot disturb other modules.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from batch_cancel_emulator.testing import Emulator
from devstack.broker import KafkaBroker
from tests.support.entra import ENTRA_ACCOUNTS, EntraSetup, entra_provider
from tests.support.events import EventLog, publish_commands
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(tls=True) as emulator:
        emulator.set_entra_tokens(required=True)
        yield emulator


class EntraStack:
    def __init__(self, kafka: KafkaBroker, emu: Emulator, setup: EntraSetup, stack: Stack) -> None:
        self.emu, self.setup, self.stack = emu, setup, stack
        stack.providers_file.write_text("providers:\n" + setup.yaml)
        self.worker = stack.start_worker(name="entra", BCW_LOG_LEVEL="DEBUG", **setup.env)


@pytest.fixture(scope="module")
def entra(kafka: KafkaBroker, emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EntraStack]:
    workdir = tmp_path_factory.mktemp("entra")
    stack = Stack(kafka, emu, workdir, dialects=())
    e = EntraStack(kafka, emu, entra_provider(emu, workdir), stack)
    yield e
    stack.close()


def _batch(entra: EntraStack, **scenario: Any) -> str:
    return entra.emu.create_batch("azure", f"batch_{uuid.uuid4().hex[:16]}", **scenario)


async def _final(entra: EntraStack, batch: str, account: str, timeout: float = 60) -> dict[str, Any]:
    s = entra.stack
    async with EventLog(s.bootstrap, s.events) as log:
        command = {"provider": "azure", "account": account, "batch_id": batch}
        (cid,) = await publish_commands(s.bootstrap, s.commands, [command])
        await log.wait_finals([cid], timeout=timeout)
        (final,) = log.finals(cid)
        states = [p.value["status"] for p in log.by_command[cid]]
    return final | {"_states": states}


def _tokens(entra: EntraStack, since: float) -> list[dict[str, Any]]:
    return [r for r in entra.emu.requests(dialect="entra") if r["t_mono"] >= since and r["op"] in ("token", "imds")]


@pytest.mark.parametrize("account", ENTRA_ACCOUNTS)
async def test_a_cancel_is_followed_to_its_end(entra: EntraStack, account: str) -> None:
    batch = _batch(entra, cancelling_polls=2)
    final = await _final(entra, batch, account)
    assert final["outcome"] == "cancelled" and final["already_terminal"] is False
    assert final["_states"] == ["cancelling", "cancelled"]
    log = entra.emu.requests(batch_id=batch)
    assert [r["method"] for r in log].count("POST") == 1 and {r["status"] for r in log} == {200}
    assert all(r["headers"]["authorization"] == "[redacted]" and "api-key" not in r["headers"] for r in log)


async def test_a_token_expiring_mid_follow_is_refreshed_in_time(entra: EntraStack) -> None:
    """Two-second tokens while a batch takes six seconds to cancel: the follow renews them as it polls."""
    entra.emu.set_entra_tokens(2, required=True)
    try:
        start = time.monotonic()
        batch = _batch(entra, cancelling_s=6)
        final = await _final(entra, batch, "shortlived")
    finally:
        entra.emu.set_entra_tokens(required=True)
    assert final["outcome"] == "cancelled" and final["_states"] == ["cancelling", "cancelled"]
    log = entra.emu.requests(batch_id=batch)
    assert {r["status"] for r in log} == {200}  # no request ever carried an expired token
    tokens = _tokens(entra, start)
    assert len(tokens) >= 3 and {r["status"] for r in tokens} == {200}
    assert log[-1]["t_mono"] - log[0]["t_mono"] >= 5.5  # the follow did outlive several tokens


async def test_a_token_revoked_mid_follow_costs_one_401(entra: EntraStack) -> None:
    batch = _batch(entra, cancelling_s=3)
    s = entra.stack
    async with EventLog(s.bootstrap, s.events) as log:
        command = {"provider": "azure", "account": "secret", "batch_id": batch}
        (cid,) = await publish_commands(s.bootstrap, s.commands, [command])
        await log.wait_until(lambda: log.by_command.get(cid), what="the cancelling event")
        entra.emu.revoke_entra_tokens()
        await log.wait_finals([cid])
        (final,) = log.finals(cid)
    assert final["outcome"] == "cancelled"
    statuses = [r["status"] for r in entra.emu.requests(batch_id=batch)]
    assert statuses.count(401) == 1 and statuses[statuses.index(401) + 1] == 200


async def test_a_revoked_identity_is_rejected_after_one_retry(entra: EntraStack) -> None:
    """Azure refuses every token (the identity lost its role): one retry with a new token, then ``rejected``."""
    entra.emu.set_entra_tokens(required=True, accept=False)
    try:
        batch = _batch(entra)
        final = await _final(entra, batch, "certificate")
    finally:
        entra.emu.set_entra_tokens(required=True)
    assert final["outcome"] == "rejected"
    assert (final["detail"]["http_status"], final["detail"]["code"]) == (401, "credentials_refused")
    assert [r["status"] for r in entra.emu.requests(batch_id=batch)] == [401, 401]


async def test_a_refused_client_secret_is_rejected_without_reaching_the_api(entra: EntraStack) -> None:
    batch = _batch(entra)
    final = await _final(entra, batch, "wrongsecret")
    assert final["outcome"] == "rejected" and final["detail"]["code"] == "credentials_refused"
    assert "AADSTS7000215" in final["detail"]["message"]
    assert entra.emu.requests(batch_id=batch) == []


def _metric(text: str, name: str, account: str, **labels: str) -> float:
    wanted = {"provider": "azure", "account": account, **labels}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{([^}}]*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match[1])) == wanted:
            return float(match[2])
    raise AssertionError(f"{name}{wanted} is not exported")


async def test_credential_metrics_show_refreshes_failures_and_age(entra: EntraStack) -> None:
    await _final(entra, _batch(entra, cancelling_polls=0), "secret")
    await _final(entra, _batch(entra), "wrongsecret")
    text = entra.worker.get("/metrics")[1]
    assert _metric(text, "bcw_credential_refreshes_total", "secret") >= 1
    assert 0 <= _metric(text, "bcw_credential_age_seconds", "secret") < 3600
    assert _metric(text, "bcw_credential_refresh_failures_total", "wrongsecret", reason="refused") >= 1
    assert _metric(text, "bcw_credential_refresh_failures_total", "secret", reason="refused") == 0
    assert _metric(text, "bcw_credential_refreshes_total", "wrongsecret") == 0


async def test_entra_secrets_never_reach_any_output(entra: EntraStack) -> None:
    """The client secrets, the certificate's private key, the federated token and the access tokens."""
    commands = [
        {"provider": "azure", "account": account, "batch_id": _batch(entra)}
        for account in (*ENTRA_ACCOUNTS, "wrongsecret")
    ]
    s = entra.stack
    async with EventLog(s.bootstrap, s.events) as events:
        ids = await publish_commands(s.bootstrap, s.commands, commands)
        await events.wait_finals(ids, timeout=60)
        published = b"".join((p.raw or b"") + repr(p.headers).encode() for p in events.records)
    outputs = {
        "events": published,
        "metrics": entra.worker.get("/metrics")[1].encode(),
        "log": entra.worker.log_text().encode(),
        "emulator request log": repr(entra.emu.requests()).encode(),
    }
    assert b"command finished" in outputs["log"] and b"Entra access token refreshed" in outputs["log"]
    for channel, text in outputs.items():
        for secret in entra.setup.secrets:
            assert secret.encode() not in text, f"a secret ({secret[:10]}…) leaked into {channel}"
