"""How often a follow polls and how long it may follow: the one set of knobs, and the adaptive interval."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FollowPolicy", "next_interval", "polls_within"]


@dataclass(frozen=True)
class FollowPolicy:
    initial_interval: float = 1.0
    max_interval: float = 30.0
    backoff: float = 1.5
    max_follow: float = 24 * 3600.0
    #: A new follow's intent waits this long for the cancel's answer, so that the one state written says
    #: whether the cancel was accepted (0: write the intent at once). See "Durability" in follow/durable.py.
    intent_delay: float = 1.0
    #: The account's provider pushes batch changes (docs/push.md): after the cancel's confirmation, routine polls
    #: wait this long (the safety net for a lost push), and a signal brings the next poll forward. None: poll.
    push_interval: float | None = None


def next_interval(current: float, changed: bool, policy: FollowPolicy) -> float:
    """Back to the fast interval after a change, otherwise a little slower, never above the cap."""
    if changed:
        return policy.initial_interval
    return min(current * policy.backoff, policy.max_interval)


def polls_within(seconds: float, current: float, policy: FollowPolicy) -> int:
    """How many routine polls the plain schedule (no push) makes in ``seconds``, starting at ``current``
    (``bcw_push_polls_saved``); unchanged answers, so each interval is the last one backed off."""
    count, elapsed, interval = 0, 0.0, current
    while elapsed + interval <= seconds:
        elapsed += interval
        count += 1
        interval = next_interval(interval, False, policy)
        if interval >= policy.max_interval:  # the rest is arithmetic
            return count + int((seconds - elapsed) // policy.max_interval)
    return count
