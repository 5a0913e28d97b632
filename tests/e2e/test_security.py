"""Kafka security against a real broker: TLS, SASL/SCRAM, ACLs, clear start-up failures, no leaked secrets.

One private broker for the module (``SecureKafka``: a SASL_SSL listener with a throw-away CA, SCRAM users
made by Kafka's StorageTool, the StandardAuthorizer and ACLs granted by Kafka's AclCommand), never the
shared session broker, whose PLAINTEXT-only configuration the other tests rely on.

The ACLs granted here are exactly the ones ``docs/security.md`` tells operators to grant, on the topic
and group prefixes the test stacks use; a worker that needed more would fail the end-to-end test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

from batch_cancel_emulator.testing import Emulator
from tests.support.events import EventLog
from tests.support.security import SecureKafka
from tests.support.stack import Stack
from worker.config import ConfigError, Settings
from worker.kafka.connection import KafkaStartError, check_connection, client_kwargs, security_kwargs
from worker.signing import sign

#: Canaries: recognisable strings searched for in every output channel.
WORKER_PASSWORD = "kafka-SECRET-worker-7c41e0d9"
PUBLISHER_PASSWORD = "kafka-SECRET-publisher-a93b2f17"
READER_PASSWORD = "kafka-SECRET-reader-52d8c6e4"
SIGNING_KEY = "sign-SECRET-canary-0b7e93aa"
USERS = {
    "worker": ("SCRAM-SHA-512", WORKER_PASSWORD),
    "publisher": ("SCRAM-SHA-256", PUBLISHER_PASSWORD),
    "reader": ("SCRAM-SHA-512", READER_PASSWORD),
}
#: How long a refused start may take; the real bound is one connection attempt (15 s) plus interpreter start.
START_FAILURE_BOUND_S = 90


def worker_acls(
    commands: str, group: str, events: str, dlq: str, follows: str, *, pattern: str = "literal"
) -> list[list[str]]:
    """The worker's ACLs, as documented: READ commands + group, WRITE commands (a selector's children), WRITE
    events + dead letters, READ and WRITE follows, DESCRIBE_CONFIGS follows (the compaction check). Nothing
    else."""
    p = ["--allow-principal", "User:worker", "--resource-pattern-type", pattern]
    return [
        [*p, "--operation", "Read", "--topic", commands, "--group", group],
        [*p, "--operation", "Write", "--topic", commands],
        [*p, "--operation", "Write", "--topic", events, "--topic", dlq],
        [*p, "--operation", "Read", "--operation", "Write", "--operation", "DescribeConfigs", "--topic", follows],
    ]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    kafka = SecureKafka(tmp_path_factory.mktemp("secure-kafka"), USERS).start()
    try:
        grants = [
            *worker_acls("commands-", "group-", "events-", "dlq-", "follows-", pattern="prefixed"),
            # Who may cancel: WRITE on the commands topic (prefix here; the literal topic in production).
            ["--allow-principal", "User:publisher", "--resource-pattern-type", "prefixed",
             "--operation", "Write", "--topic", "commands-"],
            # ...and, to wait for outcomes (batch-cancel publish --wait), READ on the events topic.
            ["--allow-principal", "User:publisher", "--resource-pattern-type", "prefixed",
             "--operation", "Read", "--topic", "events-"],
            # A legitimate reader of outcomes (a dashboard): may read events, may not cancel anything.
            ["--allow-principal", "User:reader", "--resource-pattern-type", "prefixed",
             "--operation", "Read", "--topic", "events-", "--topic", "commands-"],
        ]  # fmt: skip
        with ThreadPoolExecutor(len(grants)) as pool:  # each AclCommand is a JVM start: run them side by side
            list(pool.map(lambda args: kafka.acl(*args), grants))
        yield kafka
    finally:
        kafka.close()


def settings_for(env: dict[str, str]) -> Settings:
    return Settings.model_validate(
        {k.removeprefix("BCW_").lower(): v for k, v in env.items() if k.startswith("BCW_KAFKA_")}
    )


def secure_stack(secure: SecureKafka, emulator: Emulator, workdir: Path) -> Stack:
    """The usual e2e stack (topics made through the harness listener), with workers on SASL_SSL."""
    return Stack(secure.broker, emulator, workdir, partitions=1, env_overrides=secure.client_env("worker"))


def add_signed_account(s: Stack) -> None:
    """An openai account ``signed`` that requires signed commands, its publishing key in E2E_SIGNING_KEY."""
    providers = yaml.safe_load(s.providers_file.read_text())
    providers["providers"]["openai"]["accounts"]["signed"] = {
        "api_key_env": "E2E_KEY",
        "signing_keys_env": ["E2E_SIGNING_KEY"],
    }
    s.providers_file.write_text(yaml.safe_dump(providers))


# --- configuration checks (no broker needed) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BCW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs BCW_KAFKA_SASL_MECHANISM"),
        (
            {"BCW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "BCW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"},
            "needs BCW_KAFKA_SASL_USERNAME",
        ),
        (
            {
                "BCW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "BCW_KAFKA_SASL_MECHANISM": "PLAIN",
                "BCW_KAFKA_SASL_USERNAME": "u",
            },
            "exactly one of BCW_KAFKA_SASL_PASSWORD or BCW_KAFKA_SASL_PASSWORD_FILE",
        ),
        ({"BCW_KAFKA_SASL_USERNAME": "u"}, "does not use SASL"),
        ({"BCW_KAFKA_SSL_CAFILE": "/etc/hostname"}, "does not use TLS"),
        ({"BCW_KAFKA_SECURITY_PROTOCOL": "SSL", "BCW_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "cannot read"),
        ({"BCW_KAFKA_SECURITY_PROTOCOL": "SSL", "BCW_KAFKA_SSL_KEYFILE": "/etc/hostname"}, "needs BCW_KAFKA_SSL_CERT"),
        ({"BCW_KAFKA_SECURITY_PROTOCOL": "SSL", "BCW_KAFKA_SSL_CAFILE": "/etc/hostname"}, "must be PEM"),
    ],
)
def test_incoherent_security_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        security_kwargs(settings_for(env))


def test_password_file_is_read_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(WORKER_PASSWORD + "\n")
    env = {
        "BCW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "BCW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "BCW_KAFKA_SASL_USERNAME": "worker",
        "BCW_KAFKA_SASL_PASSWORD_FILE": str(secret),
    }
    settings = settings_for(env)
    assert client_kwargs(settings)["sasl_plain_password"] == WORKER_PASSWORD
    inline = {k: v for k, v in env.items() if k != "BCW_KAFKA_SASL_PASSWORD_FILE"}  # one source: Settings checks
    shown = settings_for({**inline, "BCW_KAFKA_SASL_PASSWORD": WORKER_PASSWORD})
    assert WORKER_PASSWORD not in repr(shown)  # SecretStr in the settings' repr and in validation errors


# --- against the secured broker -----------------------------------------------------------------------------


async def test_worker_over_sasl_ssl_cancels_end_to_end_and_leaks_no_secret(
    secure: SecureKafka, emulator: Emulator, tmp_path: Path
) -> None:
    s = secure_stack(secure, emulator, tmp_path)
    try:
        add_signed_account(s)
        worker = s.start_worker(name="sasl-ssl", BCW_LOG_LEVEL="DEBUG", E2E_SIGNING_KEY=SIGNING_KEY)
        batch = emulator.create_batch("openai", f"batch_{uuid.uuid4().hex[:10]}", cancelling_polls=2)
        signed_batch = emulator.create_batch("openai", f"batch_{uuid.uuid4().hex[:10]}")
        command = {"command_id": str(uuid.uuid4()), "provider": "openai", "batch_id": batch}
        now = datetime.now(UTC).isoformat()
        signed = {"command_id": str(uuid.uuid4()), "provider": "openai", "account": "signed", "batch_id": signed_batch,
                  "requested_at": now}  # fmt: skip
        unsigned_batch = emulator.create_batch("openai", f"batch_{uuid.uuid4().hex[:10]}")
        unsigned = {**signed, "command_id": str(uuid.uuid4()), "batch_id": unsigned_batch}
        publisher = settings_for(secure.client_env("publisher"))
        async with EventLog(s.bootstrap, s.events) as events, EventLog(s.bootstrap, s.dlq) as dlq:
            producer = AIOKafkaProducer(**client_kwargs(publisher), acks="all", enable_idempotence=True)
            await producer.start()
            try:
                key = f"openai/default/{batch}".encode()
                await producer.send_and_wait(s.commands, json.dumps(command).encode(), key=key)
                # An invalid command too, so the dead-letter path is searched for secrets as well.
                await producer.send_and_wait(s.commands, b'{"command_id": "sec-bad", "provider": "nope"}')
                raw = json.dumps(signed).encode()
                await producer.send_and_wait(s.commands, raw, headers=[sign(raw, SIGNING_KEY.encode())])
                await producer.send_and_wait(s.commands, json.dumps(unsigned).encode())
            finally:
                await producer.stop()
            ids = [command["command_id"], "sec-bad", signed["command_id"], unsigned["command_id"]]
            await events.wait_finals(ids, timeout=90)
            await dlq.wait_until(lambda: len(dlq.records) == 2, timeout=60, what="the dead letters")
            [final] = events.finals(command["command_id"])
            assert final["status"] == "cancelled", final
            [final] = events.finals(signed["command_id"])
            assert final["status"] == "cancelled", final
            [final] = events.finals(unsigned["command_id"])
            assert final["outcome"] == "invalid" and final["detail"]["code"] == "unauthorized", final
            assert dlq.records[1].headers["bcw.dlq.reason"] == b"unauthorized", dlq.records[1].headers
            # The unsigned command never reached the provider.
            assert emulator.requests(batch_id=unsigned_batch) == []
            assert emulator.requests(batch_id=signed_batch) != []
            outputs = {
                "events": b"".join((p.raw or b"") + repr(p.headers).encode() for p in events.records),
                "dlq": b"".join((p.raw or b"") + repr(p.headers).encode() for p in dlq.records),
            }
        outputs["metrics"] = worker.get("/metrics")[1].encode()
        outputs["log"] = worker.log_text().encode()
        assert b"command finished" in outputs["log"]  # the log really was written at the level searched
        for channel, text in outputs.items():
            for secret in (WORKER_PASSWORD, PUBLISHER_PASSWORD, SIGNING_KEY):
                assert secret.encode() not in text, f"a secret leaked into {channel}"
        assert worker.terminate() == 0
    finally:
        s.close()


async def test_only_principals_with_write_on_the_commands_topic_can_cancel(
    secure: SecureKafka, emulator: Emulator, tmp_path: Path
) -> None:
    s = secure_stack(secure, emulator, tmp_path)
    reader = settings_for(secure.client_env("reader"))
    producer = AIOKafkaProducer(**client_kwargs(reader), acks="all", request_timeout_ms=20_000)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(s.commands, b'{"command_id": "x", "provider": "openai", "batch_id": "b"}')
    finally:
        await producer.stop()
    # ...and the broker really holds nothing from it: the topic is still empty for the super user.
    async with EventLog(s.bootstrap, s.commands) as log:
        await log.poll()
        await log.poll()
        assert log.records == []
    # The publisher, granted WRITE, can (the end-to-end test above shows the worker acting on it).
    publisher = settings_for(secure.client_env("publisher"))
    producer = AIOKafkaProducer(**client_kwargs(publisher), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(s.commands, b"{}")
    finally:
        await producer.stop()


def run_worker_expecting_failure(stack: Stack, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env(), "BCW_METRICS_PORT": "0", "BCW_LOG_LEVEL": "DEBUG", **overrides}
    return subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_FAILURE_BOUND_S,
        check=False,
    )


def assert_one_clear_line(proc: subprocess.CompletedProcess[str], code: int, expected: str, *secrets: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output
    assert "Traceback" not in output, output
    for secret in secrets:
        assert secret not in output, "a password reached the output"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if expected in line]
    # One message, said twice at most: the structured log record and the plain line for `kubectl logs`.
    assert errors, output
    assert len({_message(line) for line in errors}) == 1, output
    assert len(lines) <= 4, f"more than one clear line:\n{output}"


def _message(line: str) -> str:
    try:
        record: Any = json.loads(line)
    except ValueError:
        return line.removeprefix("batch-cancel-worker: ")
    return str(record.get("message", record.get("msg", line)))


def test_wrong_password_fails_at_start_with_one_line(secure: SecureKafka, emulator: Emulator, tmp_path: Path) -> None:
    s = secure_stack(secure, emulator, tmp_path)
    wrong = "kafka-SECRET-wrong-0d6a11f3"
    proc = run_worker_expecting_failure(s, **secure.client_env("worker", wrong))
    assert_one_clear_line(proc, 3, "refused authentication as 'worker'", wrong, WORKER_PASSWORD)


def test_untrusted_certificate_fails_at_start_with_one_line(
    secure: SecureKafka, emulator: Emulator, tmp_path: Path
) -> None:
    s = secure_stack(secure, emulator, tmp_path)
    proc = run_worker_expecting_failure(s, **secure.client_env("worker", ca_file=secure.pki.rogue_ca_file))
    assert_one_clear_line(proc, 3, "is not trusted", WORKER_PASSWORD)


def test_missing_ca_file_fails_at_start_with_one_line(secure: SecureKafka, emulator: Emulator, tmp_path: Path) -> None:
    s = secure_stack(secure, emulator, tmp_path)
    proc = run_worker_expecting_failure(s, **secure.client_env("worker", ca_file=tmp_path / "no-such-ca.pem"))
    assert_one_clear_line(proc, 2, "cannot read BCW_KAFKA_SSL_CAFILE", WORKER_PASSWORD)


async def test_plaintext_client_on_the_tls_listener_fails_clearly(secure: SecureKafka) -> None:
    """A forgotten ``BCW_KAFKA_SECURITY_PROTOCOL`` must not hang: the start-up check names the setting."""
    settings = Settings(kafka_bootstrap_servers=secure.secure_bootstrap)
    with pytest.raises(KafkaStartError, match="BCW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"):
        await asyncio.wait_for(check_connection(settings, timeout=5), 30)


def test_cli_publishes_signed_over_sasl_ssl_and_waits(secure: SecureKafka, emulator: Emulator, tmp_path: Path) -> None:
    """The CLI reads the same BCW_KAFKA_* settings as the worker and signs with --signing-key-env."""
    s = secure_stack(secure, emulator, tmp_path)
    try:
        add_signed_account(s)
        s.start_worker(name="cli-signed", E2E_SIGNING_KEY=SIGNING_KEY)
        batch = emulator.create_batch("openai", f"batch_{uuid.uuid4().hex[:10]}", cancelling_polls=1)
        cli = Path(sys.executable).with_name("batch-cancel")
        env = {**os.environ, **secure.client_env("publisher"), "E2E_SIGNING_KEY": SIGNING_KEY}
        args = [str(cli), "publish", "--provider", "openai", "--account", "signed", "--batch-id", batch,
                "--signing-key-env", "E2E_SIGNING_KEY", "--commands-topic", s.commands, "--events-topic", s.events,
                "--wait", "--timeout", "90"]  # fmt: skip
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=150, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "FINAL cancelled" in done.stdout
        assert [r["method"] for r in emulator.requests(batch_id=batch)][:1] == ["POST"]
        assert SIGNING_KEY not in done.stdout + done.stderr
    finally:
        s.close()
