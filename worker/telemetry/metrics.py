"""Prometheus metrics: what an operator graphs and alerts on. Names are a public interface (the Helm chart's
dashboard uses them), so they change only with a note in the changelog.

Labels are bounded by construction: outcomes, reasons and causes are enums or HTTP status codes, providers
are the operator's configured names; batch and command ids never become labels (they would explode the
series count and belong in logs and traces).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.budget import Priority
from worker.contract.selector_event import SelectorOutcome
from worker.contract.types import DeadLetterReason, Outcome

# ``*_created`` series double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = [
    "ACCOUNTS",
    "ACCOUNT_METRICS",
    "CANCEL_ACCEPTED_SECONDS",
    "COMMANDS",
    "COMMANDS_IN_FLIGHT",
    "COMMAND_FINAL_SECONDS",
    "COMMIT_LAG",
    "CREDENTIALS",
    "CREDENTIAL_REFRESHES",
    "CREDENTIAL_REFRESH_FAILURES",
    "DEAD_LETTERS",
    "EVENT_PUBLISH_FAILURES",
    "FENCED",
    "FOLLOWS_IN_FLIGHT",
    "FOLLOWS_RESTORED",
    "FOLLOW_STATE_WRITES",
    "KILLS_ACTIVE",
    "LIST_REQUESTS",
    "OLDEST_FOLLOW_AGE",
    "PAUSED_PARTITIONS",
    "PROVIDER_REQUESTS",
    "PUSH_POLLS_SAVED",
    "READY",
    "RESTORE_SECONDS",
    "RETRIES",
    "SELECTORS",
    "SELECTOR_MATCHES",
    "SIGNALS",
    "SIGNAL_POLL_SECONDS",
    "SWEEP_FAILURES",
    "THROTTLED",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_RESULTS",
    "WEBHOOK_SECONDS",
    "AccountCollector",
    "AccountReading",
    "CredentialAges",
    "push_series",
    "selector_series",
    "webhook_series",
]

#: From seconds (a quick cancel) to the ten minutes OpenAI allows ``cancelling``, and beyond.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

COMMANDS = Counter("bcw_commands", "Commands finished, by final outcome", ["outcome"])
DEAD_LETTERS = Counter("bcw_dead_letters", "Records sent to the dead-letter topic, by reason", ["reason"])
PROVIDER_REQUESTS = Counter(
    "bcw_provider_requests",
    "HTTP attempts to providers, by HTTP status (or 'error' when no answer) and how it was classified",
    ["provider", "dialect", "status", "result"],
)
#: List pages are also counted in ``bcw_provider_requests`` (every HTTP attempt is); this family singles them
#: out, so "list requests as a share of all requests" is one division and the existing series keep their labels.
LIST_REQUESTS = Counter(
    "bcw_list_requests",
    "HTTP attempts to list an account's batches (selectors, standing kills), by how each was classified",
    ["provider", "result"],
)
RETRIES = Counter(
    "bcw_retries", "Retries of provider calls, by cause (HTTP status or transport)", ["provider", "cause"]
)
FOLLOWS_IN_FLIGHT = Gauge("bcw_follows_in_flight", "Batches being cancelled or followed right now")
COMMANDS_IN_FLIGHT = Gauge("bcw_commands_in_flight", "Commands consumed whose final event is not yet published")
PAUSED_PARTITIONS = Gauge("bcw_paused_partitions", "Assigned partitions paused by back-pressure")
CANCEL_ACCEPTED_SECONDS = Histogram(
    "bcw_cancel_accepted_seconds",
    "From the command's Kafka timestamp to the first state event (cancel accepted or refused)",
    buckets=_LATENCY_BUCKETS,
)
COMMAND_FINAL_SECONDS = Histogram(
    "bcw_command_final_seconds", "From the command's Kafka timestamp to its final event", buckets=_LATENCY_BUCKETS
)
EVENT_PUBLISH_FAILURES = Counter("bcw_event_publish_failures", "Failed attempts to publish an event or dead letter")
COMMIT_LAG = Gauge(
    "bcw_commit_lag", "Records fetched but not yet committed, per partition, as this worker sees it", ["partition"]
)
FENCED = Counter(
    "bcw_partitions_fenced",
    "Times this worker presumed its partitions lost and stopped their follows: no heartbeat answered for most "
    "of a session (cut off from Kafka)",
)
FOLLOWS_RESTORED = Counter(
    "bcw_follows_restored", "Follows resumed from the follow-state topic when a partition was assigned"
)
FOLLOW_STATE_WRITES = Counter(
    "bcw_follow_state_writes", "Records written to the follow-state topic, by kind (state, tombstone)", ["kind"]
)
OLDEST_FOLLOW_AGE = Gauge("bcw_oldest_follow_age_seconds", "Age of the oldest follow this worker holds (0: none)")
RESTORE_SECONDS = Histogram(
    "bcw_follows_restore_seconds",
    "Time to read the follow-state partitions of one assignment and resume their follows",
    buckets=_LATENCY_BUCKETS,
)
THROTTLED = Counter(
    "bcw_provider_throttled", "429 answers, per account (the account's rate is cut)", ["provider", "account"]
)


@dataclass(frozen=True)
class AccountReading:
    """What one provider account's gate and scheduler say at scrape time."""

    provider: str
    account: str
    budget: float  # configured max_requests_per_s
    allowed: float  # the rate allowed now (cut by 429s and quota headers, climbing back)
    in_flight: int
    waiting: tuple[int, ...]  # requests waiting for the gate, by ``Priority``: cancel, list, confirm, poll
    scheduled: int  # follows waiting for their next poll
    overdue: int  # of those, due more than a second ago


#: The ``priority`` label of ``bcw_account_requests_waiting``, in ``Priority`` order.
PRIORITY_LABELS = tuple(p.name.lower() for p in Priority)

#: The per-account families ``AccountCollector`` yields, with their labels (the alert tests read this).
ACCOUNT_METRICS: dict[str, tuple[str, ...]] = {
    "bcw_account_budget_requests_per_s": ("provider", "account"),
    "bcw_account_allowed_requests_per_s": ("provider", "account"),
    "bcw_account_requests_in_flight": ("provider", "account"),
    "bcw_account_requests_waiting": ("provider", "account", "priority"),
    "bcw_polls_scheduled": ("provider", "account"),
    "bcw_polls_overdue": ("provider", "account"),
}
_ACCOUNT_HELP = {
    "bcw_account_budget_requests_per_s": "Configured max_requests_per_s",
    "bcw_account_allowed_requests_per_s": "Request rate allowed now (429s cut it, successes restore it)",
    "bcw_account_requests_in_flight": "Requests on the wire",
    "bcw_account_requests_waiting": "Requests waiting for the account's budget, by priority",
    "bcw_polls_scheduled": "Follows waiting for their next poll",
    "bcw_polls_overdue": "Polls due more than 1 s ago: the budget cannot keep up",
}


class AccountCollector(Collector):
    """Per-account budget and scheduling gauges, read when Prometheus scrapes (nothing to keep in sync).

    Registered once at import; the running worker points ``read`` at its gates and schedulers.
    """

    def __init__(self) -> None:
        self.read: Callable[[], Iterable[AccountReading]] = tuple

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {
            name: GaugeMetricFamily(name, _ACCOUNT_HELP[name], labels=list(labels))
            for name, labels in ACCOUNT_METRICS.items()
        }

    def collect(self) -> Iterator[GaugeMetricFamily]:
        f = self._families()
        for r in self.read():
            key = [r.provider, r.account]
            f["bcw_account_budget_requests_per_s"].add_metric(key, r.budget)
            f["bcw_account_allowed_requests_per_s"].add_metric(key, r.allowed)
            f["bcw_account_requests_in_flight"].add_metric(key, r.in_flight)
            for priority, count in zip(PRIORITY_LABELS, r.waiting, strict=True):
                f["bcw_account_requests_waiting"].add_metric([*key, priority], count)
            f["bcw_polls_scheduled"].add_metric(key, r.scheduled)
            f["bcw_polls_overdue"].add_metric(key, r.overdue)
        yield from f.values()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()


ACCOUNTS = AccountCollector()
REGISTRY.register(ACCOUNTS)


CREDENTIAL_REFRESHES = Counter(
    "bcw_credential_refreshes",
    "Cloud credentials obtained or renewed per account (a Google or Entra access token, temporary AWS keys)",
    ["provider", "account"],
)
CREDENTIAL_REFRESH_FAILURES = Counter(
    "bcw_credential_refresh_failures",
    "Failed credential refreshes per account: refused (the identity provider said no; the command is rejected) "
    "or unreachable (retried within the call's budget)",
    ["provider", "account", "reason"],
)
#: The reasons ``CREDENTIAL_REFRESH_FAILURES`` counts, each born at 0 per account (``CredentialAges.watch``).
CREDENTIAL_FAILURE_REASONS = ("refused", "unreachable")


class CredentialAges(Collector):
    """``bcw_credential_age_seconds``: how old the credentials each cloud account signs with are, at scrape time.

    A token refreshed on time is younger than its lifetime (a Google or Entra token at most ~55 minutes); an age
    that keeps growing past it means the account is still using what it had and every refresh is failing.
    """

    def __init__(self) -> None:
        self._obtained: dict[tuple[str, str], float] = {}

    def watch(self, provider: str, account: str) -> None:
        """Create the account's counters at 0, so ``increase()`` sees its first refresh and its first failure."""
        CREDENTIAL_REFRESHES.labels(provider, account)
        for reason in CREDENTIAL_FAILURE_REASONS:
            CREDENTIAL_REFRESH_FAILURES.labels(provider, account, reason)

    def refreshed(self, provider: str, account: str) -> None:
        CREDENTIAL_REFRESHES.labels(provider, account).inc()
        self._obtained[(provider, account)] = time.monotonic()

    def failed(self, provider: str, account: str, reason: str) -> None:
        CREDENTIAL_REFRESH_FAILURES.labels(provider, account, reason).inc()

    def age(self, provider: str, account: str) -> float | None:
        obtained = self._obtained.get((provider, account))
        return None if obtained is None else time.monotonic() - obtained

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "bcw_credential_age_seconds",
            "Seconds since the credentials an account uses now were obtained (cloud accounts, once they have some)",
            labels=["provider", "account"],
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        now = time.monotonic()
        for (provider, account), obtained in sorted(self._obtained.items()):
            family.add_metric([provider, account], now - obtained)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()


CREDENTIALS = CredentialAges()
REGISTRY.register(CREDENTIALS)


# --- push (docs/push.md): the receiver's deliveries, and what the workers make of the signals ------------------
#: Every answer the receiver gives; ``provider`` is "unknown" for a route nobody configured (never the URL's text).
WEBHOOK_RESULTS = (
    "delivered",
    "replayed",
    "ignored",
    "bad_signature",
    "stale",
    "too_large",
    "unknown_account",
    "malformed",
    "unavailable",
)
WEBHOOK_DELIVERIES = Counter(
    "bcw_webhook_deliveries",
    "Provider deliveries to the webhook receiver, by configured provider and result (see docs/push.md)",
    ["provider", "result"],
)
WEBHOOK_SECONDS = Histogram(
    "bcw_webhook_seconds",
    "From a delivery's arrival to the receiver's answer (the signal's Kafka write included)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SIGNALS = Counter(
    "bcw_signals",
    "Signals a worker read: polled (it held the batch's follow and polled it at once) or not_held",
    ["provider", "result"],
)
SIGNAL_POLL_SECONDS = Histogram(
    "bcw_signal_poll_seconds",
    "From the receiver's verifying a delivery to the worker's poll answering for that batch",
    buckets=_LATENCY_BUCKETS,
)
PUSH_POLLS_SAVED = Counter(
    "bcw_push_polls_saved",
    "Routine polls not made because the account's provider pushes: those the plain schedule would have made "
    "while a follow waited at the push safety interval",
    ["provider"],
)

READY = Gauge(
    "bcw_ready",
    "1 when this readiness check passes, else 0 (the checks /readyz names; the pod is ready when all are 1)",
    ["check"],
)

# --- selectors (cancel by selector, standing kills) ----------------------------------------------------------
SELECTORS = Counter("bcw_selector_commands", "Selector and lift commands finished, by final outcome", ["outcome"])
SELECTOR_MATCHES = Counter(
    "bcw_selector_matches", "Batches selectors matched (and published a child for, unless dry run)", ["provider"]
)
KILLS_ACTIVE = Gauge("bcw_standing_kills", "Standing kills this worker owns and sweeps")
SWEEP_FAILURES = Counter(
    "bcw_selector_sweep_failures",
    "Standing-kill sweeps that could not list, or matched more than max_batches",
    ["provider", "account"],
)


def selector_series(accounts: Mapping[str, Iterable[str]]) -> None:
    """Every configured provider's match counter and every account's sweep-failure counter, born at 0 (see
    below): the first failed sweep after a restart must reach ``increase()`` and BcwStandingKillFailing."""
    for provider, names in accounts.items():
        SELECTOR_MATCHES.labels(provider)
        for account in names:
            SWEEP_FAILURES.labels(provider, account)


def push_series(providers: Iterable[str]) -> None:
    """A worker's signal and polls-saved counters of every provider with push, born at 0 (see below)."""
    for provider in providers:
        PUSH_POLLS_SAVED.labels(provider)
        for result in ("polled", "not_held"):
            SIGNALS.labels(provider, result)


def webhook_series(providers: Iterable[str]) -> None:
    """The receiver's delivery counters of every provider with push (and "unknown"), every result born at 0:
    the first burst of forged deliveries after a restart must reach ``increase()`` and BcwWebhookBadSignatures."""
    for provider in (*providers, "unknown"):
        for result in WEBHOOK_RESULTS:
            WEBHOOK_DELIVERIES.labels(provider, result)


# Every outcome and dead-letter reason exists from the start at 0. A labelled child is otherwise born at its
# first increment, already at 1, and ``rate()``/``increase()`` cannot see that first step: the first burst of
# rejections or dead letters after a restart would never reach an alert (docs/runbook.md).
for _outcome in Outcome:
    COMMANDS.labels(_outcome.value)
for _reason in DeadLetterReason:
    DEAD_LETTERS.labels(_reason.value)
for _selector_outcome in SelectorOutcome:  # an invalid selector is a dead letter, counted with the commands
    if _selector_outcome is not SelectorOutcome.INVALID:
        SELECTORS.labels(_selector_outcome.value)
