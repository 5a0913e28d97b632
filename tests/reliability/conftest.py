"""Reliability fixtures: stacks on the session broker (or a private one), and the run's result table.

Every scenario ends by recording one ``checker.Row``; ``pytest_terminal_summary`` prints them as one table
(``make reliability``). The session's emulator and ``make_stack`` come from tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batch_cancel_emulator.testing import Emulator
from devstack.broker import KafkaBroker
from tests.reliability.checker import Row, format_table
from tests.support.cluster import NetworkCluster
from tests.support.stack import Stack

ROWS = pytest.StashKey[list[Row]]()

RecordRow = Callable[[Row], None]
PrivateStack = Callable[..., Stack]
ClusterStack = Callable[..., Stack]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[ROWS] = []


@pytest.fixture
def record_row(request: pytest.FixtureRequest) -> RecordRow:
    """Add a scenario's row to the run's table (call it before asserting, so failures show too)."""

    def record(row: Row) -> None:
        request.config.stash[ROWS].append(row)

    return record


@pytest.fixture
def private_stack(kafka: KafkaBroker, tmp_path: Path) -> Iterator[PrivateStack]:
    """A Stack with its own emulator (request log and in-flight stats untouched by other tests) and,
    with ``own_broker=True``, its own broker that the test may stop, kill and restart."""
    stacks: list[Stack] = []
    owned: list[KafkaBroker | Emulator] = []

    def make(partitions: int = 3, *, own_broker: bool = False, **env: str) -> Stack:
        broker = kafka
        if own_broker:
            broker = KafkaBroker()
            owned.append(broker)
            broker.start()
        emu = Emulator()
        owned.append(emu)
        emu.start()
        workdir = tmp_path / f"stack{len(stacks)}"
        workdir.mkdir()
        s = Stack(broker, emu, workdir, partitions=partitions, env_overrides=env)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.close()
    for thing in owned:
        if isinstance(thing, KafkaBroker):
            thing.close()
        else:
            thing.stop()


LAST_ON_CLUSTER = pytest.StashKey[str]()
CLUSTER = pytest.StashKey[NetworkCluster]()


@pytest.fixture(scope="session")
def network(request: pytest.FixtureRequest) -> Iterator[NetworkCluster]:
    """Three brokers behind Toxiproxy (tests/support/cluster.py), started once for the cluster and network
    scenarios; each scenario gets it healed (every node up, every proxy clean) by ``cluster_stack``. Closed
    after the last scenario that uses it (``pytest_runtest_teardown``), not at the session's end: idle, its
    three JVMs and the proxy take a fifth of a core from every test after them."""
    with NetworkCluster() as nc:
        request.config.stash[CLUSTER] = nc
        yield nc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_cluster = [item.nodeid for item in items if "network" in getattr(item, "fixturenames", ())]
    if on_cluster:
        config.stash[LAST_ON_CLUSTER] = on_cluster[-1]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    cluster = item.config.stash.get(CLUSTER, None)
    if cluster is not None and item.nodeid == item.config.stash.get(LAST_ON_CLUSTER, None):
        cluster.close()


@pytest.fixture
def cluster_stack(network: NetworkCluster, emulator: Emulator, tmp_path: Path) -> Iterator[ClusterStack]:
    """Stacks on the cluster: RF 3 topics; workers bootstrap through lane 0's proxies unless told otherwise."""
    network.heal()
    stacks: list[Stack] = []

    def make(partitions: int = 3, **env: str) -> Stack:
        workdir = tmp_path / f"cluster{len(stacks)}"
        workdir.mkdir()
        overrides = {"BCW_KAFKA_BOOTSTRAP_SERVERS": network.bootstrap(0), **env}
        s = Stack(network.cluster, emulator, workdir, partitions=partitions, env_overrides=overrides)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.close()
    network.heal()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if rows:
        terminalreporter.section("reliability")
        terminalreporter.write_line(format_table(rows))
