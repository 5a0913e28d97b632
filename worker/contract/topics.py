"""The topics' default names, and the config the follows topic must be created with: one place for both.

The worker's settings (``BCW_*_TOPIC``), the publisher client and the ``batch-cancel`` command, the dev stack,
the benchmarks and the examples all default to these names, so a rename happens here once.
"""

from __future__ import annotations

__all__ = ["COMMANDS_TOPIC", "DLQ_TOPIC", "EVENTS_TOPIC", "FOLLOWS_TOPIC", "FOLLOWS_TOPIC_CONFIG", "SIGNALS_TOPIC"]

COMMANDS_TOPIC = "batch-cancel.commands"
EVENTS_TOPIC = "batch-cancel.events"
DLQ_TOPIC = "batch-cancel.dlq"
FOLLOWS_TOPIC = "batch-cancel.follows"
#: Verified provider pushes (``worker.contract.signal``), written by the webhook receiver, read by every worker.
SIGNALS_TOPIC = "batch-cancel.signals"

#: The follows topic's config in every stack this project starts (dev, tests, benchmarks): compacted, as
#: docs/durable-follows.md requires (the last state of each live follow is kept), compactable at once, in
#: segments small enough that compaction runs while a test or a benchmark does.
FOLLOWS_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"}
