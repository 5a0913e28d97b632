"""An alias of ``worker.telemetry.metrics`` for ``worker/providers/client.py`` only (it names these three).

The metrics moved into ``worker/telemetry/``; providers/ is being changed on another branch at the same
time, so its one ``from worker import metrics`` moves there when the two meet, and this module goes.
"""

from worker.telemetry.metrics import PROVIDER_REQUESTS, RETRIES, THROTTLED

__all__ = ["PROVIDER_REQUESTS", "RETRIES", "THROTTLED"]
