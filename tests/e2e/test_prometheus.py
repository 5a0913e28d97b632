"""Every dashboard query and every alert, run by a real Prometheus against what a real worker exports.

The dashboard's metric names are also checked statically (tests/deploy/test_dashboard.py) and the alerts are
unit-tested with synthetic series (tests/test_alerts.py); neither proves that Prometheus accepts the queries
or that the worker's series have the labels the queries group by. Here a Prometheus (loopback, 1 s scrapes,
the chart's rules file loaded) scrapes a worker while a scenario runs that touches every kind of series: cancels,
rejections (the ``wrongkey`` account: 401), a dead letter (a record that is no JSON), retries (429s from the
emulator), cancels on Azure accounts signing in with Microsoft Entra ID (cloud-credential series), and push: the
OpenAI account pushes through a webhook receiver (its own scraped pod), which also refuses forged deliveries. Then,
through Prometheus' HTTP API:

- each dashboard target (Grafana's variables filled in as Grafana would) parses and returns series, and each
  series has the labels its legend shows; the variables' own queries find the scraped namespace and pod;
- each alert is loaded and evaluated by Prometheus without error; each expression parses, each ``bcw_*``
  selector in it matches series (a typo in a metric or label name matches nothing, so it fails here); the
  alerts this scenario should trip are the ones whose expressions hold, the others are quiet, and the
  alerts without ``for:`` are firing in Prometheus' own ``/api/v1/alerts`` with their summaries rendered.

The scenario runs in two rounds because a labelled counter child is born at its first increment (say a
provider's first 429) and ``rate()`` cannot see that first step; the second round moves series that exist.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from batch_cancel_emulator.testing import Emulator
from devstack.broker import KafkaBroker
from devstack.prometheus import RULES, Prometheus, dashboard_queries
from tests.support.entra import entra_provider
from tests.support.events import EventLog, publish_commands
from tests.support.stack import Stack
from tests.support.waiting import until_sync
from tests.webhooks.signed import WHSEC, openai_body, sign

NAMESPACE = "e2e"
POD = "worker-0"
RECEIVER_POD = "webhooks-0"
#: Stands in for Grafana's $__rate_interval: long enough to hold the whole scenario.
RATE_INTERVAL = "2m"

#: Alerts whose expressions this scenario makes true (before their ``for:``), and with which labels.
TRIPPED = {
    "BcwDeadLetters": {"reason": "invalid_json"},
    "BcwProviderRefusingKeys": {"provider": "openai"},
    "BcwFailedOutcomesHigh": {"namespace": NAMESPACE},
    "BcwProviderRateLimited": {"provider": "openai"},
    "BcwWebhookBadSignatures": {"provider": "openai"},
}
#: Values the scenario must make visible in a panel, by panel title: (legend label, values).
MUST_SHOW = {
    "Throughput by outcome": ("outcome", {"cancelled", "rejected"}),
    "Dead letters by reason": ("reason", {"invalid_json"}),
    "Retries by cause": ("cause", {"http_429"}),
    "Provider requests by status": ("status", {"200", "401", "429"}),
    "Provider requests by result": ("result", {"ok", "rejected", "retryable"}),
    "Webhook deliveries by result": ("result", {"delivered", "bad_signature"}),
}
#: Forged deliveries per round: the second round's alone exceed the alert's 10 in 5 minutes.
FORGED = (4, 12)


def _alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def _round(s: Stack, n: int) -> list[dict[str, Any] | bytes]:
    """Four plain cancels, two that meet three 429s each before the cancel goes through, two with a key the
    provider refuses (401, ``rejected``), one on an Entra ID account, and a record that is no JSON (dead letter
    ``invalid_json``). The OpenAI batches end a moment after their cancel and the emulator pushes it."""
    tag = f"r{n}-{uuid.uuid4().hex[:6]}"
    plain = [s.emulator.create_batch("openai", f"batch_{tag}_ok{i}", cancelling_s=0.3) for i in range(4)]
    limited = [
        s.emulator.create_batch(
            "openai", f"batch_{tag}_429{i}", faults=[{"kind": "rate_limit", "count": 3}], cancelling_s=0.3
        )
        for i in range(2)
    ]
    refused = [s.emulator.create_batch("openai", f"batch_{tag}_401{i}") for i in range(2)]
    entra = s.emulator.create_batch("azure", f"batch_{tag}_entra", cancelling_polls=0)
    return [
        *({"provider": "openai", "batch_id": b} for b in plain + limited),
        {"provider": "entra", "account": "secret", "batch_id": entra},
        *({"provider": "openai", "account": "wrongkey", "batch_id": b} for b in refused),
        b"cancel " + tag.encode() + b" please",
    ]


def _forge(url: str, count: int) -> None:
    """Deliveries signed with a secret the account does not have: each is answered 401 ``bad_signature``."""
    body = openai_body("batch_forged")
    for _ in range(count):
        answer = httpx.post(f"{url}/webhooks/openai/default", content=body, headers=sign(FORGED_SECRET, body))
        assert answer.status_code == 401


FORGED_SECRET = "whsec_Zm9yZ2VkLWJ5LXNvbWVvbmUtZWxzZQ=="


async def test_every_dashboard_query_and_alert_on_a_real_prometheus(
    kafka: KafkaBroker, emulator: Emulator, tmp_path: Path
) -> None:
    s = Stack(kafka, emulator, tmp_path, partitions=2, push={"openai": WHSEC})
    try:
        await _scenario(s)
    finally:
        emulator.push_to("openai", None)
        s.close()


async def _scenario(s: Stack) -> None:
    entra = entra_provider(s.emulator, s.workdir, provider="entra")
    s.providers_file.write_text(s.providers_file.read_text() + entra.yaml)
    worker = s.start_worker(name="scraped", **entra.env)
    receiver, url = s.start_receiver()
    s.emulator.push_to("openai", f"{url}/webhooks/openai/default", secret=WHSEC)
    pods = {POD: f"127.0.0.1:{worker.port}", RECEIVER_POD: f"127.0.0.1:{receiver.port}"}
    with Prometheus(pods, rule_files=[RULES], namespace=NAMESPACE) as prom:
        prom.wait_for('up{job="batch-cancel-worker"} == 1', timeout=30, what="the first scrape of the worker")
        prom.wait_for('bcw_ready{check="group_joined"} == 1', timeout=60, what="the worker in its group")

        async with EventLog(s.bootstrap, s.events) as log, EventLog(s.bootstrap, s.dlq) as dlq:
            finals = 0
            for n in (1, 2):
                _forge(url, FORGED[n - 1])
                ids = await publish_commands(s.bootstrap, s.commands, _round(s, n))
                await log.wait_finals(ids, timeout=90)
                await dlq.wait_until(lambda n=n: len(dlq.records) >= n, timeout=30, what=f"dead letter {n}")
                finals += len(ids)
                # Prometheus has scraped everything this round counted before the next round starts.
                prom.wait_for(
                    f"sum(bcw_commands_total{{outcome!='invalid'}}) >= {finals}"
                    f" and on() sum(bcw_dead_letters_total) >= {n}",
                    timeout=30,
                    what=f"round {n} in Prometheus",
                )
        outcomes = {log.finals(c)[0]["outcome"] for c in log.by_command}
        assert {"cancelled", "rejected"} <= outcomes, outcomes

        # --- the dashboard -------------------------------------------------------------------------------
        targets = dashboard_queries(NAMESPACE, RATE_INTERVAL)
        for title, expr, legend in targets:
            result = prom.query(expr)  # raises with Prometheus' parse error
            assert result, f"{title}: no series for {expr}"
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
                missing = [r["metric"] for r in result if not r["metric"].get(label)]
                assert not missing, f"{title}: legend shows {{{{{label}}}}} but series lack it: {missing}"
        for title, (label, values) in MUST_SHOW.items():
            (expr,) = [e for t, e, _ in targets if t == title]
            shown = {r["metric"].get(label) for r in prom.query(expr)}
            assert values <= shown, f"{title}: expected {label} {values}, Prometheus shows {shown}"
        namespaces = prom.api("label/namespace/values", **{"match[]": "bcw_commands_in_flight"})
        scraped = prom.api("label/pod/values", **{"match[]": f'bcw_ready{{namespace=~"{NAMESPACE}"}}'})
        assert (namespaces, scraped) == ([NAMESPACE], sorted(pods))

        # --- the alerts -----------------------------------------------------------------------------------
        alerts = {a["alert"]: a for a in _alerts()}

        def rules() -> dict[str, dict[str, Any]]:
            groups = prom.api("rules", type="alert")["groups"]
            return {r["name"]: r for g in groups for r in g["rules"]}

        until_sync(lambda: all(r["health"] == "ok" for r in rules().values()), 30, "every rule evaluated")
        loaded = rules()
        assert set(loaded) == set(alerts)
        for name, rule in loaded.items():
            assert not rule.get("lastError"), f"{name}: {rule.get('lastError')}"

        for name, alert in alerts.items():
            holds = prom.query(alert["expr"])
            for selector in re.findall(r"\bbcw_[a-z_]+(?:\{[^}]*\})?", alert["expr"]):
                assert prom.query(f"count({selector})"), f"{name}: {selector} matches no series of the worker"
            if name in TRIPPED:
                assert holds, f"{name} should hold after this scenario: {alert['expr']}"
                for series in holds:
                    assert TRIPPED[name].items() <= series["metric"].items(), (name, series["metric"])
            else:
                assert not holds, f"{name} holds although nothing in this scenario should trip it: {holds}"

        def firing() -> dict[str, dict[str, Any]]:
            return {a["labels"]["alertname"]: a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"}

        at_once = {n for n in TRIPPED if "for" not in alerts[n]}
        assert at_once, "the scenario should trip an alert without for:"
        until_sync(lambda: at_once <= set(firing()), 30, f"{sorted(at_once)} firing in Prometheus")
        fired = firing()
        assert fired["BcwDeadLetters"]["annotations"]["summary"] == (
            "Commands are being dead-lettered (reason invalid_json)"
        )
        assert fired["BcwProviderRefusingKeys"]["annotations"]["summary"] == (
            "openai refuses the worker's API key (401/403)"
        )
        states = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]}
        assert states <= set(TRIPPED), f"alerts active that this scenario should not trip: {states - set(TRIPPED)}"
