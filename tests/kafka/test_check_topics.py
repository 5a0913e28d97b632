"""``check_topics`` at start: a broker that has just died is asked around, any other error fails at once.

The admin client sends each request to a random broker of its metadata, and a dead one stays listed until the
cluster fences it. Reliability scenario 29b found a worker starting then exit 1 though two of three brokers
served; the real cluster shows it there, these show the rule in isolation.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaConnectionError, UnsupportedVersionError

from worker import retry
from worker.config import ConfigError, Settings
from worker.kafka import follow_store


class FakeAdmin:
    """Answers like a two-topic cluster; ``failures`` are raised by the calls, in order, before answering."""

    failures: ClassVar[list[BaseException]] = []
    policy = "compact"
    calls = 0

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _next(self) -> None:
        FakeAdmin.calls += 1
        if FakeAdmin.failures:
            raise FakeAdmin.failures.pop(0)

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self._next()
        return [{"topic": t, "error_code": 0, "partitions": [{}, {}, {}]} for t in topics]

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        self._next()
        entries = [("cleanup.policy", FakeAdmin.policy)]
        return [SimpleNamespace(resources=[(0, "", 2, resources[0].name, entries)])]


@pytest.fixture(autouse=True)
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(follow_store, "AIOKafkaAdminClient", FakeAdmin)
    FakeAdmin.failures, FakeAdmin.policy, FakeAdmin.calls = [], "compact", 0
    with retry.testing():
        yield


async def test_a_broker_gone_away_is_asked_again_until_another_answers() -> None:
    FakeAdmin.failures = [KafkaConnectionError("connection at 127.0.0.1:9092 closed"), TimeoutError()]
    await follow_store.check_topics(Settings())
    assert FakeAdmin.calls == 4 and not FakeAdmin.failures


async def test_the_checks_still_refuse_after_a_retry() -> None:
    FakeAdmin.failures, FakeAdmin.policy = [KafkaConnectionError("closed")], "delete"
    with pytest.raises(ConfigError, match=r"cleanup\.policy=delete"):
        await follow_store.check_topics(Settings())


async def test_an_error_that_is_not_a_missing_broker_fails_at_once() -> None:
    FakeAdmin.failures = [UnsupportedVersionError("DescribeConfigs")]
    with pytest.raises(UnsupportedVersionError):
        await follow_store.check_topics(Settings())
    assert FakeAdmin.calls == 1
