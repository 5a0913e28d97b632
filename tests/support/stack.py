"""The end-to-end stack: fresh topics, a providers file wired to the emulator, and worker processes.

Used by tests/e2e and tests/reliability alike (their fixtures are in tests/conftest.py); the benchmarks have
their own (bench/stack.py), and both run workers through ``devstack.worker_process``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batch_cancel_emulator.testing import DEFAULT_KEY, Emulator
from devstack.broker import free_port
from devstack.topics import TopicHost, WorkerTopics
from devstack.worker_process import WorkerProcess
from tests.support.events import committed_vs_end

__all__ = [
    "DIALECTS",
    "NATIVE",
    "WRONG_KEY",
    "Stack",
    "StackFactory",
    "wait_committed",
]

DIALECTS = ("openai", "siliconflow", "dashscope", "deepinfra")
#: The providers that are not OpenAI-shaped (and Azure); a stack built with ``dialects=NATIVE`` configures them.
NATIVE = ("anthropic", "mistral", "azure", "together", "xai")
#: An account whose key the emulator does not accept: every call answers 401.
WRONG_KEY = "sk-wrong-key-for-401-tests"


@dataclass
class Stack:
    """Topics, a providers file and the environment for workers of one test (or module)."""

    kafka: TopicHost  # a KafkaBroker, or a devstack.cluster.KafkaCluster
    emulator: Emulator
    workdir: Path
    partitions: int = 3
    env_overrides: dict[str, str] = field(default_factory=dict)
    dialects: tuple[str, ...] = DIALECTS
    workers: list[WorkerProcess] = field(default_factory=list)
    #: Dialects whose ``default`` account pushes (docs/push.md), each with the secret it signs with; the signals
    #: topic is made, with ``signals_config``, when any does.
    push: dict[str, str] = field(default_factory=dict)
    signals_config: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topics = WorkerTopics(self.kafka, self.partitions, signals=self.signals_config if self.push else None)
        t = self.topics
        self.commands, self.events, self.dlq, self.follows, self.group = t.commands, t.events, t.dlq, t.follows, t.group
        lines = ["providers:"]
        for d in self.dialects:
            push = f", push: {{ secrets_env: [E2E_PUSH_{d.upper()}], poll_interval_s: 30 }}" if d in self.push else ""
            lines += [
                f"  {d}:",
                f"    dialect: {d}",
                f"    base_url: {self.emulator.base_url(d)}",
                "    max_requests_per_s: 5000  # the emulator is not a rate-limited account",
                "    accounts:",
                f"      default: {{ api_key_env: E2E_KEY{push} }}",
                "      wrongkey: { api_key_env: E2E_WRONG_KEY }",
            ]
        self.providers_file = self.workdir / "providers.yaml"
        self.providers_file.write_text("\n".join(lines) + "\n")

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    def env(self) -> dict[str, str]:
        return {
            **self.topics.env(),
            "BCW_PROVIDERS_FILE": str(self.providers_file),
            "BCW_FOLLOW_INITIAL_INTERVAL_S": "0.1",
            "BCW_FOLLOW_MAX_INTERVAL_S": "0.5",
            "BCW_COMMIT_INTERVAL_S": "0.2",
            "BCW_SHUTDOWN_GRACE_S": "10",
            "E2E_KEY": DEFAULT_KEY,
            "E2E_WRONG_KEY": WRONG_KEY,
            **{f"E2E_PUSH_{d.upper()}": secret for d, secret in self.push.items()},
            **self.env_overrides,
        }

    def start_worker(self, name: str = "worker", **overrides: str) -> WorkerProcess:
        worker = WorkerProcess({**self.env(), **overrides}, name=name)
        self.workers.append(worker)
        return worker.start()

    def start_receiver(
        self, name: str = "receiver", *, port: int | None = None, env: Mapping[str, str] | None = None
    ) -> tuple[WorkerProcess, str]:
        """``batch-cancel-worker webhooks`` on ``port`` (a free one) of 127.0.0.1, and its root URL."""
        port = port or free_port()
        env = {**self.env(), "BCW_WEBHOOKS_HOST": "127.0.0.1", "BCW_WEBHOOKS_PORT": str(port), **(env or {})}
        receiver = WorkerProcess(env, name=name, args=("webhooks",))
        self.workers.append(receiver)
        return receiver.start(), f"http://127.0.0.1:{port}"

    def close(self) -> None:
        for w in self.workers:
            w.kill()


StackFactory = Callable[..., Stack]


async def wait_committed(
    stack: Stack, timeout: float = 30.0, *, fail: bool = True
) -> tuple[dict[int, int], dict[int, int]]:
    """Wait until the group's committed offsets reach the commands topic's end offsets.

    Returns (committed, ends), the last reading; past ``timeout`` it raises, or with ``fail=False`` returns
    the reading all the same (the reliability scenarios report it in their table rather than stop there).
    """
    deadline = time.monotonic() + timeout
    while True:
        committed, ends = await committed_vs_end(stack.bootstrap, stack.commands, stack.group)
        if all(committed.get(p, 0) == end for p, end in ends.items()):
            return committed, ends
        if time.monotonic() > deadline:
            if fail:
                raise AssertionError(f"committed {committed} != end offsets {ends}")
            return committed, ends
        await asyncio.sleep(0.2)
