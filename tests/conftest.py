"""Shared fixtures: one real Kafka broker per test session, and a factory for uniquely named topics."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from devstack.broker import KafkaBroker


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
