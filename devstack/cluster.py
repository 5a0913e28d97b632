"""A three-node Apache Kafka KRaft cluster for the reliability tests, from the same jars as ``devstack.broker``.

Production runs on a replicated cluster: a leader moves while a produce is in flight, the in-sync replica set
shrinks, the controller quorum loses a voter. One broker cannot show any of that, so the network and failover
scenarios (tests/reliability/test_cluster.py, test_cluster_network.py) run on this cluster instead.

Every node is a combined broker+controller (three controller voters: the quorum survives one loss) with
three kinds of listener:

* ``INTERNAL`` — replication and the test harness itself (publishing commands, reading events, committed
  offsets), straight to the broker, so a test that breaks the workers' network never breaks its own view;
* ``CLIENT0``, ``CLIENT1``, … (``lanes``) — what workers connect to. Each lane's listener *advertises* the
  port given in ``advertised[lane][node]`` (a toxiproxy in front of it), so every connection a worker opens
  after bootstrap goes through the proxy too. Two lanes let a test cut one worker off and not another;
* ``CONTROLLER`` — the KRaft quorum.

Topics are created with replication factor 3 and ``min.insync.replicas=2``: an acknowledged write
(``acks=all``) is on two brokers at least, so one crash loses nothing. Failure detection is shortened
(broker session 6 s) so a killed leader is replaced in seconds.
``make dev`` and the single-broker tests do not use this module.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack.broker import BrokerError, KafkaBroker, _run_async, free_port

__all__ = ["REPLICATED_TOPIC_CONFIG", "ClusterNode", "KafkaCluster", "PartitionState"]

#: What every worker topic gets on the cluster (docs/durable-follows.md asks operators for the same).
REPLICATED_TOPIC_CONFIG = {"min.insync.replicas": "2"}
REPLICATION_FACTOR = 3


@dataclass(frozen=True)
class PartitionState:
    """A partition as the cluster's metadata shows it (``leader`` -1: none)."""

    leader: int
    isr: list[int]
    replicas: list[int]


@dataclass(eq=False)
class ClusterNode(KafkaBroker):
    """One node of a ``KafkaCluster``: ``port`` is its INTERNAL listener, ``client_ports`` one per lane."""

    node_id: int = 1
    cluster_id: str = ""
    voters: str = ""
    client_ports: list[int] = field(default_factory=list)
    advertised_ports: list[int] = field(default_factory=list)

    def _config(self) -> dict[str, str]:
        lanes = [
            (f"CLIENT{i}", p, a) for i, (p, a) in enumerate(zip(self.client_ports, self.advertised_ports, strict=True))
        ]
        listeners = [f"INTERNAL://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"INTERNAL://127.0.0.1:{self.port}"]
        listeners += [f"{name}://127.0.0.1:{p}" for name, p, _ in lanes]
        advertised += [f"{name}://127.0.0.1:{a}" for name, _, a in lanes]
        protocols = ["INTERNAL:PLAINTEXT", "CONTROLLER:PLAINTEXT"] + [f"{name}:PLAINTEXT" for name, _, _ in lanes]
        replicated = str(REPLICATION_FACTOR)
        cfg = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "default.replication.factor": replicated,
            "min.insync.replicas": "2",
            "offsets.topic.replication.factor": replicated,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": replicated,
            "transaction.state.log.min.isr": "2",
            "share.coordinator.state.topic.replication.factor": replicated,
            "share.coordinator.state.topic.min.isr": "2",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "unclean.leader.election.enable": "false",
            # Seconds, not the default 9 s: a killed node is fenced (out of every ISR at once) and its
            # leaderships move quickly. Not shorter: on a loaded 2-core machine a JVM pause would fence it too.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "6000",
            "controller.quorum.election.timeout.ms": "1000",
            "controller.quorum.fetch.timeout.ms": "2000",
            "message.max.bytes": str(4 * 1024 * 1024),
        }
        cfg.update(self.extra_config)
        return cfg

    @property
    def election_record(self) -> Path:
        """The Raft election state Kafka writes on every transition of this voter (leader and epoch)."""
        return self.data_dir / "logs" / "__cluster_metadata-0" / "quorum-state"

    def _format_args(self) -> list[str]:
        return ["-t", self.cluster_id]  # static voters (controller.quorum.voters): no --standalone

    def log_tail(self, lines: int = 40) -> str:
        """The tail, after the first errors: a node that fails to start logs why long before its shutdown."""
        errors: list[str] = []
        if self.log_file.exists():
            text = self.log_file.read_text(errors="replace").splitlines()
            errors = [line for line in text if " ERROR " in line or "Exception" in line][:10]
        head = "--- first errors ---\n" + "\n".join(errors) + "\n" if errors else ""
        return head + super().log_tail(lines)


@dataclass(eq=False)
class KafkaCluster:
    """Three ``ClusterNode`` processes forming one cluster; ``lanes`` client listeners on each.

    ``advertised[lane][i]`` is the port node ``i`` advertises on that lane (a proxy's); by default the node's
    own client port, so the cluster works without proxies too.
    """

    size: int = 3
    lanes: int = 2
    heap: str = "384m"
    advertised: Sequence[Sequence[int]] | None = None
    nodes: list[ClusterNode] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        cluster_id = uuid.uuid4().hex[:22]
        controllers = [free_port() for _ in range(self.size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, c in enumerate(controllers))
        for i in range(self.size):
            ports = [free_port() for _ in range(self.lanes)]
            shown = [self.advertised[lane][i] for lane in range(self.lanes)] if self.advertised else list(ports)
            self.nodes.append(
                ClusterNode(
                    controller_port=controllers[i],
                    heap=self.heap,
                    node_id=i + 1,
                    cluster_id=cluster_id,
                    voters=voters,
                    client_ports=ports,
                    advertised_ports=shown,
                )
            )

    @property
    def bootstrap_servers(self) -> str:
        """Every node's INTERNAL listener: for the harness, never behind a proxy."""
        return ",".join(n.bootstrap_servers for n in self.nodes)

    def client_ports(self, lane: int) -> list[int]:
        """The real client ports of ``lane`` (what a proxy forwards to), node by node."""
        return [n.client_ports[lane] for n in self.nodes]

    def client_bootstrap(self, lane: int = 0) -> str:
        """What a worker on ``lane`` bootstraps from: the advertised (proxied) addresses."""
        return ",".join(f"127.0.0.1:{n.advertised_ports[lane]}" for n in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self, timeout: float = 120.0) -> None:
        """Launch every node, then wait until each answers (none can before a quorum of voters runs)."""
        for n in self.nodes:
            n.launch()
        for n in self.nodes:
            n.wait_ready(timeout)

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a stopped or killed node again on its ports and data (it rejoins and catches up)."""
        self.node(node_id).start(timeout)

    def close(self) -> None:
        for n in self.nodes:
            n.close()

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- topics and partitions ------------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
        """Replication factor 3 and ``min.insync.replicas=2`` (plus ``config``), every replica in sync."""
        _run_async(self._create(name, partitions, {**REPLICATED_TOPIC_CONFIG, **(config or {})}))

    def describe(self, topic: str, timeout: float = 30.0) -> dict[int, PartitionState]:
        """Partition → its leader and replicas as the cluster sees it now.

        The admin client asks a node it picks from metadata, which may be the one a test just killed: a
        failed attempt is tried again (a fresh client, another node) until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return _run_async(self._describe(topic))
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise BrokerError(f"describe {topic} failed for {timeout:.0f}s: {exc!r}") from exc
                time.sleep(0.2)

    def quorum_leader(self) -> int | None:
        """The active controller as the running voters' own election records say, or None while they disagree
        or name a node that is not running.

        Each voter writes its Raft election state (``quorum-state``: leader and epoch) to its metadata log
        directory on every transition. Reading it needs no client: ``kafka-metadata-quorum`` starts a JVM and
        asks over the network, and on the loaded 2-core machine, just after the active controller was killed,
        it hung in its node lookup for minutes while the two voters left had long agreed.
        """
        running = [n for n in self.nodes if n.running]
        seen: set[tuple[int, int]] = set()
        for n in running:
            try:
                record = json.loads(n.election_record.read_text())
                seen.add((int(record["leaderEpoch"]), int(record["leaderId"])))
            except (OSError, ValueError, KeyError):
                return None  # not written yet, or being rewritten: ask again
        if len(seen) != 1:
            return None
        ((_, leader),) = seen
        return leader if leader in {n.node_id for n in running} else None

    def report(self, only: Iterable[int] | None = None, lines: int = 30) -> str:
        """Each node (or those in ``only``): running or not (and its exit code), its election record, its first
        errors and log tail. What a failed wait shows, because the data directories holding the logs go with
        the cluster."""
        chosen = set(only) if only is not None else {n.node_id for n in self.nodes}
        parts = []
        for n in self.nodes:
            if n.node_id not in chosen:
                continue
            state = "running" if n.running else f"not running (exit code {n.exit_code})"
            record = n.election_record
            election = record.read_text(errors="replace") if record.exists() else "(no quorum-state)"
            parts.append(f"=== node {n.node_id}: {state}; {election}\n{n.log_tail(lines)}")
        return "\n".join(parts)

    def leader(self, topic: str, partition: int) -> int:
        return self.describe(topic)[partition].leader

    def wait_in_sync(self, topics: Sequence[str], timeout: float = 90.0, *, size: int | None = None) -> None:
        """Until every partition of ``topics`` has a leader and ``size`` (default: all) replicas in sync."""
        want = size or self.size
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                states = {t: self.describe(t) for t in topics}
                last = dict(states)
                if all(p.leader >= 0 and len(p.isr) >= want for d in states.values() for p in d.values()):
                    return
            except Exception as exc:  # noqa: BLE001 - a node still starting: describe again
                last = {"error": repr(exc)}
            time.sleep(0.25)
        absent = {
            r for d in last.values() if isinstance(d, dict) for p in d.values() for r in p.replicas if r not in p.isr
        }
        raise BrokerError(
            f"partitions not in sync ({want} replicas) after {timeout:.0f}s: {last}\n{self.report(absent, 60)}"
        )

    async def _create(self, name: str, partitions: int, config: dict[str, str]) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import KafkaError, TopicAlreadyExistsError

        # A node that has just rejoined (or a loaded machine) can time a request out: ask again until a
        # deadline; "already exists" on a later try means an earlier one did create it.
        deadline = time.monotonic() + 90
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=30000)
            try:
                await admin.start()
                await admin.create_topics([NewTopic(name, partitions, REPLICATION_FACTOR, topic_configs=config)])
                break
            except TopicAlreadyExistsError:
                break
            except (KafkaError, OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
            finally:
                await admin.close()
        # A leader and min.insync.replicas in sync is what acks=all needs; a node that is still catching up
        # after a restart joins the ISR later (tests that restart nodes wait for all three themselves).
        await asyncio.to_thread(self.wait_in_sync, [name], 60.0, size=2)

    async def _describe(self, topic: str) -> dict[int, PartitionState]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000)
        await admin.start()
        try:
            described = await asyncio.wait_for(admin.describe_topics([topic]), 10)
        finally:
            await admin.close()
        parts = described[0].get("partitions", []) if described else []
        return {
            int(p["partition"]): PartitionState(int(p["leader"]), list(p["isr"]), list(p["replicas"])) for p in parts
        }
