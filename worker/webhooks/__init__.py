"""The webhook receiver's parts: verifying deliveries, reading what they say, remembering what was seen, and the
HTTP route that turns each verified batch change into a signal record. Knows nothing of Kafka: the signal goes
to a ``SignalSink`` (``worker.kafka.signals.SignalWriter`` in ``worker.receiver``)."""

from worker.webhooks.server import PATH, Receiver, Route, SignalSink
from worker.webhooks.verify import TOLERANCE_S, HeaderSecret, Refused, StandardWebhooks, Verifier

__all__ = [
    "PATH",
    "TOLERANCE_S",
    "HeaderSecret",
    "Receiver",
    "Refused",
    "Route",
    "SignalSink",
    "StandardWebhooks",
    "Verifier",
]
