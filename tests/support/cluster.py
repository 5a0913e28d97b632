"""A three-broker cluster behind Toxiproxy: the broken network the cluster and network scenarios run on.

``NetworkCluster`` starts a Toxiproxy server, picks one proxy port per broker per lane, starts a
``devstack.cluster.KafkaCluster`` whose lane listeners advertise those ports, and creates the proxies. A worker
on lane 0 reaches the brokers only through ``lane_proxies(0)``: add latency there, or disable them to cut it
off, while the harness keeps its own direct view (``cluster.bootstrap_servers``). ``proxy_emulator`` puts a
proxy in front of the provider emulator too. ``heal`` undoes whatever a scenario did (proxies, toxics, stopped
nodes), so one failed scenario does not poison the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from devstack.broker import free_port
from devstack.cluster import KafkaCluster
from devstack.toxiproxy import ToxiproxyServer
from tests.support.toxiproxy import Proxy, Toxiproxy

__all__ = ["NetworkCluster"]


@dataclass(eq=False)
class NetworkCluster:
    lanes: int = 2
    server: ToxiproxyServer = field(default_factory=ToxiproxyServer)
    proxies: list[list[Proxy]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._ports = [[free_port() for _ in range(3)] for _ in range(self.lanes)]
        self.cluster = KafkaCluster(lanes=self.lanes, advertised=self._ports)
        self.api: Toxiproxy | None = None

    @property
    def toxiproxy(self) -> Toxiproxy:
        assert self.api is not None, "NetworkCluster not started"
        return self.api

    def start(self) -> None:
        self.server.start()
        self.api = Toxiproxy(self.server.url)
        for lane in range(self.lanes):
            self.proxies.append(
                [
                    self.api.create(f"kafka{node}-lane{lane}", port, f"127.0.0.1:{upstream}")
                    for node, (port, upstream) in enumerate(
                        zip(self._ports[lane], self.cluster.client_ports(lane), strict=True), start=1
                    )
                ]
            )
        self.cluster.start()

    def lane_proxies(self, lane: int) -> list[Proxy]:
        return self.proxies[lane]

    def bootstrap(self, lane: int) -> str:
        """``BCW_KAFKA_BOOTSTRAP_SERVERS`` for a worker on ``lane`` (every broker, through its proxy)."""
        return ",".join(p.address for p in self.proxies[lane])

    def proxy_emulator(self, name: str, emulator_url: str) -> str:
        """A proxy in front of the emulator; returns the URL to use instead of ``emulator_url``."""
        parts = urlsplit(emulator_url)
        proxy = self.toxiproxy.create(name, free_port(), parts.netloc)
        return f"{parts.scheme}://{proxy.address}{parts.path}"

    def cut(self, lane: int) -> None:
        for p in self.proxies[lane]:
            self.toxiproxy.set_enabled(p, False)

    def restore(self, lane: int) -> None:
        for p in self.proxies[lane]:
            self.toxiproxy.set_enabled(p, True)

    def heal(self) -> None:
        """Every proxy enabled and clean, every node running (a scenario's leftovers never reach the next)."""
        self.toxiproxy.reset()
        for node in self.cluster.nodes:
            if not node.running:
                node.start()

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
        self.cluster.close()
        self.server.stop()

    def __enter__(self) -> NetworkCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
