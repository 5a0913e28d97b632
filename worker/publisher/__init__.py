"""The publisher's side: what applications and operators use to send cancels and read outcomes.

* ``client.py``: the Python client (``CancelPublisher``, ``publish_cancel``, ``wait_for_outcome``,
  ``EventFollower``); its names
  are exported here, so ``from worker.publisher import publish_cancel``.
* ``cli.py``: the ``batch-cancel`` command (publish, watch, follows).
* ``follows.py``: the live follows on the follow-state topic, for ``batch-cancel follows``.
* ``selectors.py``: cancel by selector from Python (``build_selector``, ``publish_selector``, ``SelectorWatch``);
  ``kill_cli.py``: ``batch-cancel cancel-matching``, ``kills`` and ``lift``.

The worker's runtime never imports this package (tests/test_boundaries.py): nothing here can change what a
deployed worker does.
"""

from worker.publisher.client import (
    DEFAULT_COMMANDS_TOPIC,
    DEFAULT_EVENTS_TOPIC,
    CancelPublisher,
    EventFollower,
    OutcomeTimeout,
    build_command,
    encode_command,
    parse_event,
    publish_cancel,
    publish_cancel_sync,
    trace_headers,
    wait_for_outcome,
)
from worker.publisher.selectors import (
    ChildTally,
    SelectorTimeout,
    SelectorWatch,
    build_lift,
    build_selector,
    publish_selector,
)

__all__ = [
    "DEFAULT_COMMANDS_TOPIC",
    "DEFAULT_EVENTS_TOPIC",
    "CancelPublisher",
    "ChildTally",
    "EventFollower",
    "OutcomeTimeout",
    "SelectorTimeout",
    "SelectorWatch",
    "build_command",
    "build_lift",
    "build_selector",
    "encode_command",
    "parse_event",
    "publish_cancel",
    "publish_cancel_sync",
    "publish_selector",
    "trace_headers",
    "wait_for_outcome",
]
