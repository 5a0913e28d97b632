"""Request budgets and priorities over real HTTP: a worker process, the emulator, the real broker.

What an operator relies on: polls never exceed an account's ``max_requests_per_s`` (read from the
emulator's own request log), a new cancel overtakes every routine poll waiting for the budget, and a 429
storm slows the account down without losing a command, after which it recovers.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from typing import Any

from devstack.worker_process import WorkerProcess
from tests.support.events import EventLog, publish_commands
from tests.support.stack import Stack, StackFactory

BUDGET = 40.0
CONCURRENCY = 4
#: Polls as fast as allowed: the demand (batches ÷ 0.05 s) is far above the budget, so polls queue.
HUNGRY = {"BCW_FOLLOW_INITIAL_INTERVAL_S": "0.05", "BCW_FOLLOW_MAX_INTERVAL_S": "0.1"}


def budgeted(s: Stack, budget: float = BUDGET) -> None:
    s.providers_file.write_text(
        "providers:\n"
        "  openai:\n"
        "    dialect: openai\n"
        f"    base_url: {s.emulator.base_url('openai')}\n"
        f"    max_concurrency: {CONCURRENCY}\n"
        f"    max_requests_per_s: {budget}\n"
        "    accounts: { default: { api_key_env: E2E_KEY } }\n"
    )


def metric(worker: WorkerProcess, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$", re.MULTILINE)
    for m in pattern.finditer(worker.get("/metrics")[1]):
        if all(part in m.group("labels") for part in wanted.split(",")):
            return float(m.group("value"))
    return None


def busiest_second(times: list[float]) -> int:
    """The most requests in any one-second window."""
    window: deque[float] = deque()
    best = 0
    for t in sorted(times):
        window.append(t)
        while window[0] <= t - 1.0:
            window.popleft()
        best = max(best, len(window))
    return best


def bid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def test_polls_stay_within_the_budget_and_a_new_cancel_overtakes_them(make_stack: StackFactory) -> None:
    s = make_stack(partitions=3, **HUNGRY)
    budgeted(s)
    worker = s.start_worker(name="budget")
    batches = s.emulator.create_batches("openai", 150, prefix=f"bud_{uuid.uuid4().hex[:6]}_", cancelling_s=60.0)
    async with EventLog(s.bootstrap, s.events) as events:
        ids = await publish_commands(s.bootstrap, s.commands, [{"provider": "openai", "batch_id": b} for b in batches])
        await events.wait_until(lambda: all(events.by_command.get(c) for c in ids), 60, "every cancel accepted")
        await events.wait_until(
            lambda: (metric(worker, "bcw_polls_overdue", provider="openai", account="default") or 0) > 50,
            30,
            "polls queueing behind the budget",
        )
        urgent = s.emulator.create_batch("openai", bid("urgent"), cancelling_s=60.0)
        published_at = time.time()
        [cid] = await publish_commands(s.bootstrap, s.commands, [{"provider": "openai", "batch_id": urgent}])
        await events.wait_until(lambda: bool(events.by_command.get(cid)), 30, "the urgent cancel's first event")
        # Long enough at full demand for a rate to mean something (~7 s at the budget).
        ours = {*batches, urgent}  # the emulator is the session's: other tests' requests are in its log too

        def mine() -> list[dict[str, Any]]:
            return [r for r in s.emulator.requests(dialect="openai") if r["batch_id"] in ours]

        await events.wait_until(lambda: len(mine()) >= 300, 60, "300 requests")
    log = mine()
    post = next(r for r in log if r["batch_id"] == urgent and r["method"] == "POST")
    overtaken = [r for r in log if published_at <= r["t_wall"] < post["t_wall"] and r["batch_id"] != urgent]
    # What went out between the publish and the cancel: the polls already on the wire or holding a token,
    # the Kafka round trip's worth of budget (at 40/s, a few), never the queue of overdue polls (> 50).
    assert len(overtaken) <= 12, f"{len(overtaken)} polls went ahead of the new cancel"
    times = [float(r["t_mono"]) for r in log]
    assert busiest_second(times) <= BUDGET + 1 + 1, busiest_second(times)  # the budget, its 1-token burst, 1 spare
    assert max(times) - min(times) > 5, "the run must be long enough to measure a rate"


async def test_a_429_storm_slows_the_account_loses_nothing_and_recovers(make_stack: StackFactory) -> None:
    s = make_stack(partitions=3, **HUNGRY)
    budgeted(s)
    worker = s.start_worker(name="storm")
    batches = s.emulator.create_batches("openai", 60, prefix=f"storm_{uuid.uuid4().hex[:6]}_", cancelling_s=12.0)
    async with EventLog(s.bootstrap, s.events) as events:
        ids = await publish_commands(s.bootstrap, s.commands, [{"provider": "openai", "batch_id": b} for b in batches])
        await events.wait_until(lambda: all(events.by_command.get(c) for c in ids), 60, "every cancel accepted")
        s.emulator.set_quota("openai", 8, retry_after_s=1.0)  # the provider cuts the quota mid-run
        await events.wait_until(
            lambda: (
                (metric(worker, "bcw_account_allowed_requests_per_s", provider="openai", account="default") or 99)
                <= BUDGET / 4
            ),
            30,
            "the account to slow down",
        )
        s.emulator.set_quota("openai", None)
        await events.wait_finals(ids, timeout=90)
        await events.wait_until(
            lambda: (
                (metric(worker, "bcw_account_allowed_requests_per_s", provider="openai", account="default") or 0)
                >= BUDGET
            ),
            60,
            "the account to recover its budget",
        )
    assert {events.finals(c)[0]["outcome"] for c in ids} == {"cancelled"}
    throttled = metric(worker, "bcw_provider_throttled_total", provider="openai", account="default")
    assert throttled is not None and throttled > 0
    statuses = [r["status"] for r in s.emulator.requests(dialect="openai") if r["batch_id"] in set(batches)]
    assert statuses.count(429) < statuses.count(200), "the worker kept hammering a refusing account"
