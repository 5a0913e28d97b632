"""Publishers for real: the ``batch-cancel`` CLI, the Python client, kcat, Node.js and the budget guard, each
against the session's broker, a real worker process and the provider emulator.

The kcat test runs the one-liner from ``examples/kcat/README.md`` verbatim and the Node test runs
``examples/node/cancel.mjs``, so what the docs show is what is tested.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.events import EventLog
from tests.support.stack import Stack, StackFactory
from worker.contract import BatchStateEvent
from worker.publisher import EventFollower, publish_cancel, publish_cancel_sync, wait_for_outcome

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("batch-cancel")
TRACEPARENT = re.compile(rb"^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")  # flags 03: sampled + random id
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def bid(prefix: str = "pub") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def run(*cmd: str, env: dict[str, str], timeout: float = 120.0, cwd: Path = ROOT) -> tuple[int, list[str], str]:
    """Run a process to completion; returns (exit code, stdout lines, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines(), err.decode()


async def command_record(stack: Stack, command_id: str) -> Any:
    """The command as it sits on the commands topic (key, headers), read back from the broker."""
    async with EventLog(stack.bootstrap, stack.commands) as log:
        await log.wait_until(lambda: command_id in log.by_command, timeout=30, what=f"command {command_id}")
        return log.by_command[command_id][0]


# --- the CLI ----------------------------------------------------------------------------------------------


async def test_cli_publish_wait_prints_each_change_and_exits_0_on_cancelled(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("openai", bid(), cancelling_polls=2)
    code, out, err = await run(str(CLI), "publish", "--provider", "openai", "--batch-id", batch, "--wait", env=s.env())
    assert code == 0, err
    command_id = out[0]
    assert UUID.match(command_id)
    assert "cancelling" in out[1] and batch in out[1] and "FINAL" not in out[1]
    assert "FINAL cancelled" in out[-1] and len(out) == 3
    record = await command_record(s, command_id)
    assert record.key == f"openai/default/{batch}".encode()
    assert record.value["requested_by"] and record.value["requested_at"]
    # One trace end to end: the command carries the span the CLI printed.
    match = TRACEPARENT.match(record.headers["traceparent"])
    assert match is not None and f"trace {match.group(1).decode()}" in err


async def test_cli_publish_wait_exits_3_with_the_reason_when_rejected(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("siliconflow", bid())
    code, out, err = await run(
        str(CLI), "publish", "--provider", "siliconflow", "--account", "wrongkey", "--batch-id", batch, "--wait",
        env=s.env(),
    )  # fmt: skip
    assert code == 3, err
    assert "FINAL rejected" in out[-1] and "HTTP 401" in out[-1]
    assert "batch-cancel: rejected: HTTP 401" in err


async def test_cli_publish_wait_exits_6_on_timeout_and_plain_publish_only_prints_the_id(shared_stack: Stack) -> None:
    s = shared_stack
    slow = s.emulator.create_batch("dashscope", bid(), cancelling_s=120.0)
    code, out, err = await run(
        str(CLI), "publish", "--provider", "dashscope", "--batch-id", slow, "--wait", "--timeout", "3", env=s.env()
    )
    assert code == 6 and "timeout" in err
    assert "cancelling" in out[-1]
    code, out, err = await run(str(CLI), "publish", "--provider", "openai", "--batch-id", bid(), env=s.env())
    assert code == 0 and len(out) == 1 and UUID.match(out[0]), err


def _inherit_ignored_signals() -> None:
    """Start the CLI with SIGINT and SIGTERM ignored, as a shell's background job or a CI runner may: the CLI
    must stop on them anyway, and the test no longer depends on how its own run was started."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


async def test_cli_watch_json_streams_events_live(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("deepinfra", bid(), cancelling_polls=2)
    other = s.emulator.create_batch("deepinfra", bid())
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "watch", "--json", "--batch-id", batch,
        env={**os.environ, **s.env()}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_inherit_ignored_signals,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert b"watching" in ready
        await publish_cancel(s.bootstrap, "deepinfra", other, topic=s.commands)
        command_id = await publish_cancel(s.bootstrap, "deepinfra", batch, topic=s.commands)
        events: list[dict[str, Any]] = []
        while not (events and events[-1]["final"]):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)  # arrives while the process still runs
            assert line, "watch ended early"
            events.append(json.loads(line))
        assert {e["batch_id"] for e in events} == {batch} and {e["command_id"] for e in events} == {command_id}
        assert [e["status"] for e in events] == ["cancelling", "cancelled"]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_cli_publish_wait_stops_on_a_signal_it_inherited_ignored(
    shared_stack: Stack, sig: signal.Signals, code: int
) -> None:
    s = shared_stack
    slow = s.emulator.create_batch("dashscope", bid(), cancelling_s=120.0)
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "publish", "--provider", "dashscope", "--batch-id", slow, "--wait",
        env={**os.environ, **s.env()}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_inherit_ignored_signals,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() and b"cancelling" not in line, "the command id, printed once published"
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert b"cancelling" in line, "waiting: the batch is cancelling and stays so for two minutes"
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 30) == code
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- the Python client ------------------------------------------------------------------------------------


async def test_client_publish_then_wait_for_outcome_reads_back_from_a_timestamp(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("openai", bid(), cancelling_polls=1)
    command_id = await publish_cancel(s.bootstrap, "openai", batch, topic=s.commands, reason="e2e client")
    await asyncio.sleep(0)  # the wait starts after the publish on purpose: it must still see every event
    seen: list[BatchStateEvent] = []
    final = await wait_for_outcome(s.bootstrap, command_id, events_topic=s.events, timeout=60, on_event=seen.append)
    assert final.outcome == "cancelled" and final.batch_id == batch
    assert [e.status for e in seen] == ["cancelling", "cancelled"]


async def test_client_follower_entered_before_publish_and_sync_wrapper(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("siliconflow", bid(), status="completed")
    async with EventFollower(s.bootstrap, s.events) as follower:
        command_id = await asyncio.to_thread(publish_cancel_sync, s.bootstrap, "siliconflow", batch, topic=s.commands)
        final = await follower.outcome(command_id, timeout=60)
    assert final.outcome == "completed" and final.already_terminal is True


async def test_client_no_follow_ends_accepted(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("openai", bid(), cancelling_polls=5)
    async with EventFollower(s.bootstrap, s.events) as follower:
        command_id = await publish_cancel(s.bootstrap, "openai", batch, topic=s.commands, follow=False)
        final = await follower.outcome(command_id, timeout=60)
    assert final.outcome == "accepted" and final.status == "cancelling"


# --- kcat -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kcat() -> str:
    """kcat from PATH, installed with apt-get when missing (CI machines start clean; we run as root there)."""
    found = shutil.which("kcat")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("kcat is not installed and this is not root: run `apt-get install -y kcat`")
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [
        ["apt-get", "install", "-y", "-q", "kcat"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "kcat"],
    ]
    for step in steps:  # try without an update first: the package lists are usually fresh enough
        result = subprocess.run(step, env=apt, capture_output=True, text=True, timeout=600, check=False)
        if step[1] == "install" and result.returncode == 0:
            break
    found = shutil.which("kcat")
    if not found:
        pytest.fail(f"could not install kcat with apt-get (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return found


def kcat_one_liner() -> str:
    """The documented line: the first ``sh`` block after the ``<!-- publish`` marker in the kcat README."""
    text = (ROOT / "examples" / "kcat" / "README.md").read_text()
    match = re.search(r"<!-- publish.*?-->\s*```sh\n(.*?)\n```", text, re.DOTALL)
    assert match is not None, "examples/kcat/README.md lost its <!-- publish --> block"
    line = match.group(1)
    assert line.count("\n") == 0 and "kcat -P" in line and "traceparent=00-" in line
    return line


async def test_kcat_one_liner_from_the_docs_cancels_a_batch(shared_stack: Stack, kcat: str) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("openai", bid("kcat"), cancelling_polls=1)
    command_id = str(uuid.uuid4())
    env = {
        "BROKER": s.bootstrap,
        "TOPIC": s.commands,
        "PROVIDER": "openai",
        "ACCOUNT": "default",
        "BATCH_ID": batch,
        "COMMAND_ID": command_id,
        "PATH": f"{Path(kcat).parent}:{os.environ.get('PATH', '')}",
    }
    async with EventFollower(s.bootstrap, s.events) as follower:
        code, _, err = await run("bash", "-euo", "pipefail", "-c", kcat_one_liner(), env=env, timeout=60)
        assert code == 0, err
        final = await follower.outcome(command_id, timeout=60)
    assert final.outcome == "cancelled" and final.batch_id == batch
    record = await command_record(s, command_id)
    assert record.key == f"openai/default/{batch}".encode() and TRACEPARENT.match(record.headers["traceparent"])


# --- Node.js with kafkajs ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_example() -> Path:
    """``examples/node`` with its pinned dependencies installed (``npm ci``: exactly package-lock.json)."""
    here = ROOT / "examples" / "node"
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.fail("node and npm are needed (Node.js 18 or newer)")
    if not (here / "node_modules" / "kafkajs").is_dir():
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=here, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stderr[-2000:]}"
    return here


async def test_node_kafkajs_example_publishes_and_waits_for_cancelled(shared_stack: Stack, node_example: Path) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("dashscope", bid("node"), cancelling_polls=2)
    env = {
        "BROKER": s.bootstrap,
        "COMMANDS_TOPIC": s.commands,
        "EVENTS_TOPIC": s.events,
        "PROVIDER": "dashscope",
        "BATCH_ID": batch,
        "TIMEOUT_S": "90",
    }
    code, out, err = await run("node", "cancel.mjs", env=env, cwd=node_example, timeout=150)
    assert code == 0, f"{out}\n{err}"
    assert any(line.startswith("published ") and "traceparent=00-" in line for line in out)
    assert out[-1].endswith("FINAL cancelled")
    command_id = next(line.split()[1] for line in out if line.startswith("published "))
    assert TRACEPARENT.match((await command_record(s, command_id)).headers["traceparent"])


async def test_node_kafkajs_example_exits_3_when_rejected(shared_stack: Stack, node_example: Path) -> None:
    s = shared_stack
    env = {
        "BROKER": s.bootstrap,
        "COMMANDS_TOPIC": s.commands,
        "EVENTS_TOPIC": s.events,
        "PROVIDER": "openai",
        "ACCOUNT": "wrongkey",
        "BATCH_ID": s.emulator.create_batch("openai", bid("node")),
    }
    code, out, err = await run("node", "cancel.mjs", env=env, cwd=node_example, timeout=150)
    assert code == 3, f"{out}\n{err}"
    assert "rejected" in err


# --- the budget guard -------------------------------------------------------------------------------------


@pytest.fixture
def guard_stack(make_stack: StackFactory) -> tuple[Stack, str]:
    """A stack of its own (the guard's commands must be the only ones on it) plus a spend topic."""
    s = make_stack(partitions=2)
    spend_topic = f"spend-{uuid.uuid4().hex[:8]}"
    s.kafka.create_topic(spend_topic, 1)
    s.start_worker(name="guard-worker")
    return s, spend_topic


async def test_budget_guard_kills_only_the_team_over_budget(guard_stack: tuple[Stack, str]) -> None:
    """Crossing the budget publishes one standing kill per account the team spends on: every running batch of
    the team stops, including one the guard never heard of, started after the crossing; the other team's run on."""
    s, spend_topic = guard_stack
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"

    def batch(provider: str, team: str, **scenario: Any) -> tuple[str, str]:
        return provider, s.emulator.create_batch(provider, bid(team), metadata={"team": team}, **scenario)

    team_a = [batch("openai", a, cancelling_polls=2), batch("siliconflow", a, cancelling_polls=2)]
    team_a.append(batch("dashscope", a, cancelling_polls=2))
    late_a = batch("deepinfra", a, cancelling_polls=1)
    team_b = [batch("openai", b), batch("deepinfra", b)]

    def spend(team: str, ref: tuple[str, str], usd: float) -> dict[str, Any]:
        return {"team": team, "provider": ref[0], "account": "default", "batch_id": ref[1], "cost_usd": usd}

    # Under budget so far: a has 7 of 10, b has 9 of 10 (b never crosses).
    records = [spend(a, team_a[0], 4), spend(b, team_b[0], 5), spend(a, team_a[1], 3), spend(b, team_b[1], 4)]
    guard = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.budget_guard", "--bootstrap-servers", s.bootstrap,
        "--commands-topic", s.commands, "--spend-topic", spend_topic, "--budget-usd", "10", "--sweep-interval", "10",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert guard.stderr is not None
    try:
        async with EventLog(s.bootstrap, s.events) as log:
            await send_json(s.bootstrap, spend_topic, records)
            await send_json(s.bootstrap, spend_topic, [spend(a, team_a[2], 2), spend(a, team_a[0], 1.5)])  # 10.5
            await send_json(s.bootstrap, spend_topic, [spend(a, late_a, 0.1)])  # a's first spend on a new account
            unseen = batch("openai", a, cancelling_polls=1)  # started after the crossing; no spend record at all

            def final_of(batch: str) -> dict[str, Any] | None:
                finals = [p.value for p in log.records if p.value.get("batch_id") == batch and p.value.get("final")]
                return finals[0] if finals else None

            a_batches = [x for _, x in [*team_a, late_a, unseen]]
            await log.wait_until(lambda: all(final_of(x) for x in a_batches), timeout=120, what="team a cancelled")
            assert {final_of(x)["outcome"] for x in a_batches} == {"cancelled"}  # type: ignore[index]
        cancelled_b = [r for _, x in team_b for r in s.emulator.requests(batch_id=x) if r["method"] == "POST"]
        assert cancelled_b == []
        assert not [p for p in log.records if p.value.get("batch_id") in {x for _, x in team_b}]
        commands = EventLog(s.bootstrap, s.commands)
        async with commands:
            await commands.wait_until(lambda: len(commands.records) >= 9, timeout=30, what="kills and children")
        kills = [p.value for p in commands.records if p.value.get("kind") == "cancel_matching"]
        assert sorted(k["provider"] for k in kills) == ["dashscope", "deepinfra", "openai", "siliconflow"]
        assert all(k["match"] == {"metadata": {"team": a}} and k["until"] for k in kills)
        children = [p.value for p in commands.records if "kind" not in p.value]
        assert {c["batch_id"] for c in children} == set(a_batches)
        assert all(c["reason"].startswith("budget guard") for c in children)
    finally:
        guard.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(guard.wait(), 30)
        logs = (await guard.stderr.read()).decode()
    assert code == 0, logs
    assert logs.count("standing kill published") == 4


async def send_json(bootstrap: str, topic: str, values: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, json.dumps(value).encode())
    finally:
        await producer.stop()
