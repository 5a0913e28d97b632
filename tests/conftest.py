"""Shared fixtures: one real Kafka broker and one provider emulator per session, topics, and e2e stacks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_cancel_emulator.testing import Emulator
from devstack.broker import KafkaBroker
from tests.support import fakes
from tests.support.stack import Stack, StackFactory
from worker.dispatch import Dispatcher


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    """A running broker shared by the session; tests that crash or restart a broker start their own."""
    with KafkaBroker() as broker:
        yield broker


TopicFactory = Callable[..., str]


@pytest.fixture
def new_topic(kafka: KafkaBroker) -> TopicFactory:
    """Create a topic with a unique name, so tests sharing the broker never see each other's records."""

    def create(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka.create_topic(name, partitions)
        return name

    return create


@pytest.fixture
async def make_dispatcher() -> AsyncIterator[fakes.MakeDispatcher]:
    """``fakes.make`` for a test, closing every dispatcher (and its follows) it built when the test ends."""
    built: list[Dispatcher] = []

    def make(*args: Any, **kwargs: Any) -> Dispatcher:
        d = fakes.make(*args, **kwargs)
        built.append(d)
        return d

    yield make
    for d in built:
        await fakes.close(d)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator(tls=True) as emu:  # TLS for Microsoft Entra ID's endpoints (the secrets test's Azure accounts)
        yield emu


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
