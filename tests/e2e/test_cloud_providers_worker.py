"""The worker process end to end for the Gemini API, Vertex AI and Bedrock: broker, worker, emulator, credentials.

One worker serves the module; its providers file names a service-account key file generated here (the emulator
trusts its public half), the AWS credentials come from the standard chain (the environment, and a profile of a
shared-credentials file for the account whose secret is wrong). The emulator is this module's own, so changing
its token lifetime cannot disturb other modules.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from batch_cancel_emulator.testing import DEFAULT_AWS_KEY, DEFAULT_KEY, Emulator
from devstack.broker import KafkaBroker
from tests.support.cloud import ServiceAccountKey, make_service_account_key
from tests.support.events import EventLog, publish_commands
from tests.support.stack import WRONG_KEY, Stack
from worker.contract import child_command_id, selector_key

CLOUD = ("gemini", "vertex", "bedrock")
PROJECT, LOCATION, REGION = "bcw-test-project", "us-central1", "eu-west-1"
WRONG_SECRET = "wrong/secret/for/the/signature/test0000"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


class CloudStack:
    def __init__(self, kafka: KafkaBroker, emu: Emulator, workdir: Path) -> None:
        self.stack = Stack(kafka, emu, workdir, dialects=())
        self.emu = emu
        self.key = self._trusted_key(workdir, "bcw-worker")
        self.short_key = self._trusted_key(workdir, "bcw-short")  # only the token-expiry test uses its account
        untrusted = make_service_account_key(workdir, emu.google_token_uri, name="bcw-untrusted")
        self.private_key_line = self.key.path.read_text().split("\\n")[2]  # a line from inside the private key
        credentials = workdir / "aws-credentials"
        credentials.write_text(
            f"[wrongsig]\naws_access_key_id = {DEFAULT_AWS_KEY[0]}\naws_secret_access_key = {WRONG_SECRET}\n"
        )

        def vertex(key: ServiceAccountKey) -> str:
            return f"{{ project: {PROJECT}, location: {LOCATION}, google_service_account_file: {key.path} }}"

        self.stack.providers_file.write_text(
            "providers:\n"
            "  gemini:\n"
            "    dialect: gemini\n"
            f"    base_url: {emu.base_url('gemini')}\n"
            "    max_requests_per_s: 5000\n"
            "    accounts:\n"
            "      default: { api_key_env: E2E_KEY }\n"
            "      wrongkey: { api_key_env: E2E_WRONG_KEY }\n"
            "  vertex:\n"
            "    dialect: vertex\n"
            f"    base_url: {emu.base_url('vertex')}\n"
            "    max_requests_per_s: 5000\n"
            "    accounts:\n"
            f"      default: {vertex(self.key)}\n"
            f"      shortlived: {vertex(self.short_key)}\n"
            f"      untrusted: {vertex(untrusted)}\n"
            "  bedrock:\n"
            "    dialect: bedrock\n"
            f"    base_url: {emu.base_url('bedrock')}\n"
            "    max_requests_per_s: 5000\n"
            "    accounts:\n"
            f"      default: {{ region: {REGION} }}\n"
            f"      wrongsig: {{ region: {REGION}, aws_profile: wrongsig }}\n"
        )
        self.env = {
            "AWS_ACCESS_KEY_ID": DEFAULT_AWS_KEY[0],
            "AWS_SECRET_ACCESS_KEY": DEFAULT_AWS_KEY[1],
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "BCW_LOG_LEVEL": "DEBUG",  # so the secrets test also covers what only DEBUG would print
        }

    def _trusted_key(self, workdir: Path, name: str) -> ServiceAccountKey:
        key = make_service_account_key(workdir, self.emu.google_token_uri, name=name)
        self.emu.trust_google_key(key.key_id, key.client_email, key.public_pem)
        return key

    def start(self) -> None:
        self.worker = self.stack.start_worker(name="cloud", **self.env)


@pytest.fixture(scope="module")
def cloud(kafka: KafkaBroker, emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudStack]:
    c = CloudStack(kafka, emu, tmp_path_factory.mktemp("cloud"))
    c.start()
    yield c
    c.stack.close()


def _id(dialect: str) -> str:
    hexa = uuid.uuid4().hex
    return {"vertex": str(int(hexa[:15], 16)), "bedrock": hexa[:12]}.get(dialect, f"batch-{hexa[:16]}")


async def _final(
    cloud: CloudStack, provider: str, batch: str, account: str = "default", timeout: float = 60
) -> dict[str, Any]:
    s = cloud.stack
    async with EventLog(s.bootstrap, s.events) as log:
        command = {"provider": provider, "account": account, "batch_id": batch}
        (cid,) = await publish_commands(s.bootstrap, s.commands, [command])
        await log.wait_finals([cid], timeout=timeout)
        (final,) = log.finals(cid)
        states = [p.value["status"] for p in log.by_command[cid]]
    return final | {"_states": states}


@pytest.mark.parametrize("provider", CLOUD)
async def test_cancelled(cloud: CloudStack, provider: str) -> None:
    batch = cloud.emu.create_batch(provider, _id(provider), cancelling_polls=2)
    final = await _final(cloud, provider, batch)
    assert final["outcome"] == "cancelled" and final["already_terminal"] is False
    # Gemini has no cancelling state: a batch still stopping reads as running
    assert final["_states"] == ["in_progress" if provider == "gemini" else "cancelling", "cancelled"]
    assert final["provider_status"] in ("BATCH_STATE_CANCELLED", "JOB_STATE_CANCELLED", "Stopped")
    log = cloud.emu.requests(batch_id=batch)
    assert [r["method"] for r in log].count("POST") == 1 and {r["status"] for r in log} == {200}


async def test_gemini_instant_cancel(cloud: CloudStack) -> None:
    batch = cloud.emu.create_batch("gemini", _id("gemini"), cancelling_polls=0)
    final = await _final(cloud, "gemini", batch)
    assert final["outcome"] == "cancelled" and final["_states"] == ["cancelled"]
    assert [r["method"] for r in cloud.emu.requests(batch_id=batch)] == ["POST", "GET"]


@pytest.mark.parametrize(
    ("provider", "scenario"),
    [
        ("gemini", {}),
        ("vertex", {}),
        ("bedrock", {}),  # ValidationException
        ("bedrock", {"bedrock_finished": "ConflictException"}),
        ("vertex", {"finished_answer": "batch"}),  # or a 200 with nothing changed: the read still tells
    ],
)
async def test_already_finished(cloud: CloudStack, provider: str, scenario: dict[str, Any]) -> None:
    batch = cloud.emu.create_batch(provider, _id(provider), status="completed", **scenario)
    final = await _final(cloud, provider, batch)
    assert final["outcome"] == "completed" and final["already_terminal"] is True
    cancel, read = cloud.emu.requests(batch_id=batch)[:2]
    assert (cancel["method"], read["method"], read["status"]) == ("POST", "GET", 200)


async def test_wrong_signature_is_rejected_after_one_call(cloud: CloudStack) -> None:
    batch = cloud.emu.create_batch("bedrock", _id("bedrock"))
    final = await _final(cloud, "bedrock", batch, account="wrongsig")
    assert final["outcome"] == "rejected"
    assert final["detail"]["http_status"] == 403 and final["detail"]["code"] == "InvalidSignatureException"
    assert len(cloud.emu.requests(batch_id=batch)) == 1


async def test_refused_api_key_and_unknown_batch_are_rejected(cloud: CloudStack) -> None:
    batch = cloud.emu.create_batch("gemini", _id("gemini"))
    final = await _final(cloud, "gemini", batch, account="wrongkey")
    assert final["outcome"] == "rejected" and final["detail"]["code"] == "API_KEY_INVALID"
    assert len(cloud.emu.requests(batch_id=batch)) == 1
    for provider in CLOUD:
        final = await _final(cloud, provider, _id(provider))
        assert final["outcome"] == "rejected" and final["detail"]["http_status"] == 404, provider


async def test_an_id_in_the_wrong_form_is_rejected_before_any_request(cloud: CloudStack) -> None:
    before = len(cloud.emu.requests(dialect="bedrock"))
    final = await _final(cloud, "bedrock", "not-a-job-id")
    assert final["outcome"] == "rejected" and final["detail"]["code"] == "invalid_batch_id"
    assert len(cloud.emu.requests(dialect="bedrock")) == before


async def test_untrusted_service_account_is_rejected_without_reaching_the_api(cloud: CloudStack) -> None:
    batch = cloud.emu.create_batch("vertex", _id("vertex"))
    final = await _final(cloud, "vertex", batch, account="untrusted")
    assert final["outcome"] == "rejected" and final["detail"]["code"] == "credentials_refused"
    assert "invalid_grant" in final["detail"]["message"]
    assert cloud.emu.requests(batch_id=batch) == []


async def test_a_token_expiring_mid_follow_is_refreshed_in_time(cloud: CloudStack) -> None:
    """Two-second tokens while a job takes six seconds to cancel: the follow renews them as it polls."""
    cloud.emu.set_google_tokens(2)
    try:
        start = time.monotonic()
        batch = cloud.emu.create_batch("vertex", _id("vertex"), cancelling_s=6)
        final = await _final(cloud, "vertex", batch, account="shortlived")
    finally:
        cloud.emu.set_google_tokens()
    assert final["outcome"] == "cancelled" and final["_states"] == ["cancelling", "cancelled"]
    log = cloud.emu.requests(batch_id=batch)
    assert {r["status"] for r in log} == {200}  # no request ever carried an expired token
    tokens = [r for r in cloud.emu.requests(dialect="google_token") if r["t_mono"] >= start]
    assert len(tokens) >= 3 and {r["status"] for r in tokens} == {200}
    assert log[-1]["t_mono"] - log[0]["t_mono"] >= 5.5  # the follow did outlive several tokens


async def test_a_token_revoked_mid_follow_costs_one_401(cloud: CloudStack) -> None:
    batch = cloud.emu.create_batch("vertex", _id("vertex"), cancelling_s=3)
    s = cloud.stack
    async with EventLog(s.bootstrap, s.events) as log:
        (cid,) = await publish_commands(s.bootstrap, s.commands, [{"provider": "vertex", "batch_id": batch}])
        await log.wait_until(lambda: log.by_command.get(cid), what="the cancelling event")
        cloud.emu.revoke_google_tokens()
        await log.wait_finals([cid])
        (final,) = log.finals(cid)
    assert final["outcome"] == "cancelled"
    statuses = [r["status"] for r in cloud.emu.requests(batch_id=batch)]
    assert statuses.count(401) == 1 and statuses[statuses.index(401) + 1] == 200


async def test_cloud_secrets_never_reach_any_output(cloud: CloudStack) -> None:
    """The service account's private key, the access tokens, the AWS secrets and the Gemini key stay secret."""
    commands = [
        {"provider": "gemini", "batch_id": cloud.emu.create_batch("gemini", _id("gemini"))},
        {"provider": "vertex", "batch_id": cloud.emu.create_batch("vertex", _id("vertex"))},
        {"provider": "bedrock", "batch_id": cloud.emu.create_batch("bedrock", _id("bedrock"))},
        {"provider": "bedrock", "account": "wrongsig", "batch_id": cloud.emu.create_batch("bedrock", _id("bedrock"))},
        {"provider": "vertex", "account": "untrusted", "batch_id": cloud.emu.create_batch("vertex", _id("vertex"))},
    ]
    s = cloud.stack
    async with EventLog(s.bootstrap, s.events) as events:
        ids = await publish_commands(s.bootstrap, s.commands, commands)
        await events.wait_finals(ids, timeout=60)
        published = b"".join((p.raw or b"") + repr(p.headers).encode() for p in events.records)
    worker = cloud.worker
    outputs = {
        "events": published,
        "metrics": worker.get("/metrics")[1].encode(),
        "log": worker.log_text().encode(),
        "emulator request log": repr(cloud.emu.requests()).encode(),
    }
    assert b"command finished" in outputs["log"]
    secrets = [DEFAULT_AWS_KEY[1], WRONG_SECRET, DEFAULT_KEY, WRONG_KEY, cloud.private_key_line, "ya29.emulator-"]
    for channel, text in outputs.items():
        for secret in secrets:
            assert secret.encode() not in text, f"a secret ({secret[:6]}…) leaked into {channel}"


@pytest.mark.parametrize("provider", CLOUD)
async def test_cancel_by_selector(cloud: CloudStack, provider: str) -> None:
    """A selector over a creation window and a name prefix: exactly the running matches get one cancel each."""
    s, emu = cloud.stack, cloud.emu
    t0 = 978_307_200 + int(uuid.uuid4().int % (300 * 86400))  # an hour of 2001 of this test's own
    prefix = f"eval-{uuid.uuid4().hex[:6]}"

    def make(n: int, *, at: int, name: str, **scenario: Any) -> list[str]:
        return [
            emu.create_batch(provider, _id(provider), created_at=at + i, name=f"{name}-{i}", **scenario)
            for i in range(n)
        ]

    hits = make(4, at=t0 + 10, name=prefix, cancelling_polls=1)
    misses = make(3, at=t0 + 20, name=prefix, status="completed") + make(3, at=t0 + 30, name="prod")
    misses += make(2, at=t0 + 7200, name=prefix)
    command = {
        "kind": "cancel_matching",
        "command_id": f"sel-{uuid.uuid4().hex[:10]}",
        "provider": provider,
        "account": "default",
        "match": {
            "created_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
            "created_before": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 3600)),
            "name_prefix": prefix,
        },
        "reason": "e2e",
        "requested_by": "tests",
    }
    async with EventLog(s.bootstrap, s.events) as log:
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all")
        await producer.start()
        try:
            key = selector_key(provider, "default").encode()
            await producer.send_and_wait(s.commands, json.dumps(command).encode(), key=key)
        finally:
            await producer.stop()
        cid = str(command["command_id"])
        children = [child_command_id(cid, provider, "default", b) for b in hits]
        await log.wait_finals([cid, *children], timeout=60)
        final = log.finals(cid)[0]
        assert (final["outcome"], final["matched"], final["published"]) == ("expanded", 4, 4)
        assert {log.finals(c)[0]["outcome"] for c in children} == {"cancelled"}
    posts = Counter(r["batch_id"] for r in emu.requests(dialect=provider) if r["method"] == "POST")
    assert {b: posts[b] for b in hits} == dict.fromkeys(hits, 1)
    assert not [b for b in misses if posts[b]]
