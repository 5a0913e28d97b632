"""End-to-end fixtures: the session's broker, one provider emulator, and worker processes wired to both."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.broker import KafkaBroker
from tests.support.worker import WorkerProcess
from worker.emulator.testing import DEFAULT_KEY, Emulator

DIALECTS = ("openai", "siliconflow", "dashscope", "deepinfra")
#: What docs/durable-follows.md tells operators to create the follows topic with.
FOLLOWS_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"}
#: The providers that are not OpenAI-shaped (and Azure); a stack built with ``dialects=NATIVE`` configures them.
NATIVE = ("anthropic", "mistral", "azure", "together", "xai")
#: An account whose key the emulator does not accept: every call answers 401.
WRONG_KEY = "sk-wrong-key-for-401-tests"


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@dataclass
class Stack:
    """Topics, a providers file and the environment for workers of one test (or module)."""

    kafka: KafkaBroker
    emulator: Emulator
    workdir: Path
    partitions: int = 3
    env_overrides: dict[str, str] = field(default_factory=dict)
    dialects: tuple[str, ...] = DIALECTS
    workers: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.commands = f"commands-{tag}"
        self.events = f"events-{tag}"
        self.dlq = f"dlq-{tag}"
        self.follows = f"follows-{tag}"
        self.group = f"group-{tag}"
        self.kafka.create_topic(self.commands, self.partitions)
        self.kafka.create_topic(self.events, self.partitions)
        self.kafka.create_topic(self.dlq, 1)
        self.kafka.create_topic(self.follows, self.partitions, FOLLOWS_TOPIC_CONFIG)
        lines = ["providers:"]
        for d in self.dialects:
            lines += [
                f"  {d}:",
                f"    dialect: {d}",
                f"    base_url: {self.emulator.base_url(d)}",
                "    max_requests_per_s: 5000  # the emulator is not a rate-limited account",
                "    accounts:",
                "      default: { api_key_env: E2E_KEY }",
                "      wrongkey: { api_key_env: E2E_WRONG_KEY }",
            ]
        self.providers_file = self.workdir / "providers.yaml"
        self.providers_file.write_text("\n".join(lines) + "\n")

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    def env(self) -> dict[str, str]:
        return {
            "BCW_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "BCW_COMMANDS_TOPIC": self.commands,
            "BCW_EVENTS_TOPIC": self.events,
            "BCW_DLQ_TOPIC": self.dlq,
            "BCW_FOLLOWS_TOPIC": self.follows,
            "BCW_GROUP_ID": self.group,
            "BCW_PROVIDERS_FILE": str(self.providers_file),
            "BCW_FOLLOW_INITIAL_INTERVAL_S": "0.1",
            "BCW_FOLLOW_MAX_INTERVAL_S": "0.5",
            "BCW_COMMIT_INTERVAL_S": "0.2",
            "BCW_SHUTDOWN_GRACE_S": "10",
            "E2E_KEY": DEFAULT_KEY,
            "E2E_WRONG_KEY": WRONG_KEY,
            **self.env_overrides,
        }

    def start_worker(self, name: str = "worker", **overrides: str) -> WorkerProcess:
        worker = WorkerProcess({**self.env(), **overrides}, name=name)
        self.workers.append(worker)
        return worker.start()

    def close(self) -> None:
        for w in self.workers:
            w.kill()


StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(kafka: KafkaBroker, emulator: Emulator, tmp_path: Path) -> Iterator[StackFactory]:
    stacks: list[Stack] = []

    def make(partitions: int = 3, **env: str) -> Stack:
        s = Stack(kafka, emulator, tmp_path, partitions=partitions, env_overrides=env)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.close()


@pytest.fixture(scope="module")
def shared_stack(kafka: KafkaBroker, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker for a module's independent scenarios: each test uses its own batch and command ids."""
    s = Stack(kafka, emulator, tmp_path_factory.mktemp("stack"))
    s.start_worker()
    yield s
    s.close()
