"""How often a follow polls and how long it may follow: the one set of knobs, and the adaptive interval."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FollowPolicy", "next_interval"]


@dataclass(frozen=True)
class FollowPolicy:
    initial_interval: float = 1.0
    max_interval: float = 30.0
    backoff: float = 1.5
    max_follow: float = 24 * 3600.0
    #: A new follow's intent waits this long for the cancel's answer, so that the one state written says
    #: whether the cancel was accepted (0: write the intent at once). See "Durability" in follow/durable.py.
    intent_delay: float = 1.0


def next_interval(current: float, changed: bool, policy: FollowPolicy) -> float:
    """Back to the fast interval after a change, otherwise a little slower, never above the cap."""
    if changed:
        return policy.initial_interval
    return min(current * policy.backoff, policy.max_interval)
