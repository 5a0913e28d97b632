"""``batch-cancel follows``: what the workers are following right now, read from the follow-state topic.

The topic is the truth about live follows (a worker's memory is only its share of it), so this works
whether one worker runs or twenty, and while none does: a follow whose owner crashed is listed until the
next owner resumes and finishes it. Read-only; it needs READ on the follows topic and nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient

from worker.config import KafkaConnection
from worker.contract import FollowState, KillState
from worker.kafka.connection import client_kwargs
from worker.kafka.follow_store import read_follows

__all__ = ["format_follows", "kept_records", "live_follows"]


async def kept_records(settings: KafkaConnection, topic: str) -> list[FollowState | KillState]:
    """Every live record of the follow-state topic, of every partition: follows and standing kills."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = {p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"]}
    if not partitions:
        raise LookupError(f"topic {topic!r} does not exist or has no partitions")
    found = await read_follows(settings, topic, partitions)
    return [s for part in found.values() for s in part]


async def live_follows(settings: KafkaConnection, topic: str, provider: str | None = None) -> list[FollowState]:
    """Every live follow on ``topic``, oldest first (optionally only one provider's)."""
    states = [
        s
        for s in await kept_records(settings, topic)
        if isinstance(s, FollowState) and (provider is None or s.provider == provider)
    ]
    return sorted(states, key=lambda s: s.since)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_follows(states: Sequence[FollowState], *, as_json: bool, now: float | None = None) -> list[str]:
    """Lines to print: one JSON object per follow, or a table with a header."""
    now = time.time() if now is None else now
    if as_json:
        return [
            json.dumps(
                {
                    "batch": s.key,
                    "status": s.last_status.value if s.last_status else None,
                    "cancel_accepted": s.cancel_accepted,
                    "since": s.since.isoformat().replace("+00:00", "Z"),
                    "updated_at": s.updated_at.isoformat().replace("+00:00", "Z"),
                    "waiting": [w.command_id for w in s.waiting],
                },
                separators=(",", ":"),
            )
            for s in states
        ]
    lines = [f"{'batch':<48}  {'status':<12}  {'since':>7}  {'cancel':<8}  waiting commands"]
    for s in states:
        status = s.last_status.value if s.last_status else "-"
        cancel = "accepted" if s.cancel_accepted else "pending"
        ids = ", ".join(w.command_id for w in s.waiting[:3]) + (
            f" (+{len(s.waiting) - 3})" if len(s.waiting) > 3 else ""
        )
        lines.append(f"{s.key:<48}  {status:<12}  {_age(now - s.since.timestamp()):>7}  {cancel:<8}  {ids}")
    lines.append(f"{len(states)} live follows")
    return lines
