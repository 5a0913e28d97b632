"""What the cluster and network scenarios (test_cluster.py, test_cluster_network.py) share beyond harness.py.

Leaders and the controller quorum as the cluster sees them, and the lag measurement every scenario reports.
"""

from __future__ import annotations

import time

from devstack.cluster import KafkaCluster
from tests.support.stack import Stack, wait_committed

__all__ = ["lag_zero_after", "leaders", "round_trip_s", "wait_quorum_leader"]


async def lag_zero_after(s: Stack, timeout: float = 60.0) -> float:
    """Seconds until the group has committed every command published so far (intake caught up)."""
    start = time.monotonic()
    await wait_committed(s, timeout)
    return time.monotonic() - start


def leaders(cluster: KafkaCluster, topics: list[str]) -> dict[str, dict[int, int]]:
    """Topic → partition → the node leading it now."""
    return {t: {p: state.leader for p, state in cluster.describe(t).items()} for t in topics}


def wait_quorum_leader(cluster: KafkaCluster, not_: int | None = None, timeout: float = 60.0) -> tuple[int, float]:
    """Until the running voters agree on a leader other than ``not_``; returns it and the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        leader = cluster.quorum_leader()
        if leader is not None and leader != not_:
            return leader, time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"no agreed quorum leader other than {not_} after {timeout:.0f}s\n{cluster.report()}")


async def round_trip_s(bootstrap: str, samples: int = 5, attempts: int = 1) -> float:
    """The median time of a metadata request to ``bootstrap``: proof that a latency toxic is in the way.
    ``attempts``: tries (a fresh client each) when connections may be reset on purpose."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            took = []
            for _ in range(samples):
                t0 = time.monotonic()
                await admin.describe_cluster()
                took.append(time.monotonic() - t0)
            return sorted(took)[len(took) // 2]
        except (KafkaError, OSError):
            if attempt == attempts - 1:
                raise
        finally:
            await admin.close()
    raise AssertionError("unreachable")
