"""A fresh set of the worker's topics on a broker: what every stack that runs workers starts from.

The end-to-end tests (tests/support/stack.py) and the benchmarks (bench/stack.py) each make one per test or
run, so no two ever share a topic or a consumer group.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from worker.contract.topics import FOLLOWS_TOPIC_CONFIG

__all__ = ["FOLLOWS_TOPIC_CONFIG", "TopicHost", "WorkerTopics"]


class TopicHost(Protocol):
    """Where topics are made: one broker (``devstack.broker.KafkaBroker``) or a cluster (``devstack.cluster``)."""

    @property
    def bootstrap_servers(self) -> str: ...

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None: ...


@dataclass
class WorkerTopics:
    """Commands, events and follows topics of ``partitions`` each, a one-partition DLQ, a group name, and, when
    asked, the signals topic."""

    broker: TopicHost
    partitions: int = 3
    prefix: str = ""
    follows_config: Mapping[str, str] = field(default_factory=lambda: dict(FOLLOWS_TOPIC_CONFIG))
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    #: Make the signals topic too (push, docs/push.md); its config, e.g. ``{"min.insync.replicas": "2"}``.
    signals: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        self.commands = f"{self.prefix}commands-{self.tag}"
        self.events = f"{self.prefix}events-{self.tag}"
        self.dlq = f"{self.prefix}dlq-{self.tag}"
        self.follows = f"{self.prefix}follows-{self.tag}"
        self.group = f"{self.prefix}group-{self.tag}"
        self.signals_topic = f"{self.prefix}signals-{self.tag}"
        self.broker.create_topic(self.commands, self.partitions)
        self.broker.create_topic(self.events, self.partitions)
        self.broker.create_topic(self.dlq, 1)
        self.broker.create_topic(self.follows, self.partitions, dict(self.follows_config))
        if self.signals is not None:
            self.broker.create_topic(self.signals_topic, self.partitions, dict(self.signals))

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def env(self) -> dict[str, str]:
        """The ``BCW_`` variables that point a worker at these topics and this group."""
        return {
            "BCW_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "BCW_COMMANDS_TOPIC": self.commands,
            "BCW_EVENTS_TOPIC": self.events,
            "BCW_DLQ_TOPIC": self.dlq,
            "BCW_FOLLOWS_TOPIC": self.follows,
            "BCW_SIGNALS_TOPIC": self.signals_topic,
            "BCW_GROUP_ID": self.group,
        }
