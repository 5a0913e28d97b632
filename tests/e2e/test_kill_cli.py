"""``batch-cancel cancel-matching``, ``kills`` and ``lift`` as an operator runs them: a subprocess against a
real broker, a worker and the emulator. stdin is never a terminal here, so the prompt itself is covered by the
"refuses without a terminal" test and by ``--yes`` everywhere else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from batch_cancel_emulator.testing import Emulator
from devstack.broker import KafkaBroker
from tests.e2e.test_publishers import CLI, run
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def stack(kafka: KafkaBroker, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(kafka, emulator, tmp_path_factory.mktemp("kill-cli"))
    s.start_worker()
    yield s
    s.close()


def _env(s: Stack) -> dict[str, str]:
    return {**s.env(), "BCW_KAFKA_BOOTSTRAP_SERVERS": s.bootstrap}


def _team(s: Stack, hits: int, others: int = 3) -> tuple[str, list[str], list[str]]:
    team = uuid.uuid4().hex[:8]
    hit = s.emulator.create_batches("openai", hits, prefix=f"cli_{team}_", metadata={"team": team}, cancelling_polls=1)
    miss = s.emulator.create_batches("openai", others, prefix=f"cli_o_{team}_", metadata={"team": "other"})
    return team, hit, miss


def _posted(s: Stack, batches: list[str]) -> list[str]:
    wanted = set(batches)
    return [
        r["batch_id"]
        for r in s.emulator.requests(dialect="openai")
        if r["method"] == "POST" and r["batch_id"] in wanted
    ]


def _args(team: str, *extra: str) -> list[str]:
    return [str(CLI), "cancel-matching", "--provider", "openai", "--account", "default", "--metadata", f"team={team}",
            "--reason", "e2e", *extra]  # fmt: skip


async def test_preview_then_cancel_with_yes_and_wait(stack: Stack) -> None:
    team, hit, miss = _team(stack, 4)
    code, out, err = await run(*_args(team, "--yes", "--wait", "--timeout", "90"), env=_env(stack))
    assert code == 0, err
    text = "\n".join(out)
    assert "4 batches match" in text and all(b in text for b in hit) and not any(b in text for b in miss)
    assert "summary" in text
    summary = out[out.index(next(line for line in out if "summary" in line)) :]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in summary if "│" in line]
    assert ["4", "0", "0", "0", "0"] in rows, (out, err)  # 4 cancelled, none finished, rejected, gave up or left
    assert sorted(_posted(stack, hit + miss)) == sorted(hit)  # each match once, nothing else


async def test_dry_run_cancels_nothing(stack: Stack) -> None:
    team, hit, miss = _team(stack, 2)
    code, out, err = await run(*_args(team, "--dry-run"), env=_env(stack))
    assert code == 0, err
    assert "2 batches match" in "\n".join(out)
    await asyncio.sleep(0)
    assert _posted(stack, hit + miss) == []


async def test_without_a_terminal_and_without_yes_it_refuses(stack: Stack) -> None:
    team, hit, _ = _team(stack, 2)
    code, _, err = await run(*_args(team), env=_env(stack))
    assert code == 1 and "refusing to cancel without a terminal" in err
    assert _posted(stack, hit) == []


async def test_too_many_matches_exit_rejected(stack: Stack) -> None:
    team, hit, _ = _team(stack, 3)
    code, _, err = await run(*_args(team, "--max", "2", "--yes"), env=_env(stack))
    assert code == 3 and "too_many_matches" in err and "3 batches match; max_batches is 2" in err
    assert _posted(stack, hit) == []


async def test_a_bad_criterion_fails_before_anything_is_sent(stack: Stack) -> None:
    code, _, err = await run(*_args("x", "--status", "completed", "--yes"), env=_env(stack))
    assert code == 2 and "statuses" in err


async def test_standing_kill_listed_then_lifted(stack: Stack) -> None:
    team, hit, _ = _team(stack, 1)
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    code, out, err = await run(*_args(team, "--until", until, "--yes", "--wait", "--timeout", "90"), env=_env(stack))
    assert code == 0, err
    kill_id = next(line for line in out if line.startswith("sel-"))
    code, out, err = await run(str(CLI), "kills", env=_env(stack))
    assert code == 0 and kill_id in "\n".join(out), err
    lift = [str(CLI), "lift", kill_id, "--provider", "openai", "--account", "default", "--reason", "done"]
    code, out, err = await run(*lift, env=_env(stack))
    assert code == 0 and f"lifted {kill_id}" in "\n".join(out), err
    code, out, err = await run(str(CLI), "kills", env=_env(stack))
    assert kill_id not in "\n".join(out)
    assert _posted(stack, hit) == hit
