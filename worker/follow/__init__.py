"""Following: one ``Follow`` per batch, kept by the ``Follows`` registry, written durably, polled on schedule.

* ``registry.py``: ``Follows``, every follow of this process by commands partition (the consumer's
  ``FollowOwner``; intake hands it each valid command).
* ``follow.py``: ``Follow``, the cancel and the polls of one batch, reporting to each command that joined.
* ``durable.py``: the write machine every follow runs (``Durable``) and the writers (``StateWrites``).
* ``subscriber.py``: one command waiting (``Subscriber``) and what its follow tells back (``CommandHandle``).
* ``services.py``: what a follow works with, as protocols, held once per (partition, provider, account).
* ``policy.py``, ``scheduler.py``: how often each follow polls, and when.

This package knows nothing of Kafka, HTTP or the provider dialects: it reaches them through the protocols
of services.py and registry.py.
"""

from worker.follow.durable import Durable, StateWrites
from worker.follow.follow import Follow
from worker.follow.policy import FollowPolicy, next_interval
from worker.follow.registry import EventSink, Follows, StateSink
from worker.follow.scheduler import PollScheduler
from worker.follow.services import FollowServices, Persist, Provider, Publish
from worker.follow.subscriber import CommandHandle, Subscriber

__all__ = [
    "CommandHandle",
    "Durable",
    "EventSink",
    "Follow",
    "FollowPolicy",
    "FollowServices",
    "Follows",
    "Persist",
    "PollScheduler",
    "Provider",
    "Publish",
    "StateSink",
    "StateWrites",
    "Subscriber",
    "next_interval",
]
