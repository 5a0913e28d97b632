"""The Grafana dashboard against the worker's metric names, kinds and labels, and the ConfigMap that ships it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.renderer import CHART, Renderer, _of

pytestmark = pytest.mark.timeout(1800)  # building helm on a cold cache takes minutes

DASHBOARD = CHART / "dashboards" / "batch-cancel-worker.json"

# The worker's Prometheus metrics (worker/telemetry/metrics.py) and their labels.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "bcw_commands_total": ("counter", frozenset({"outcome"})),
    "bcw_dead_letters_total": ("counter", frozenset({"reason"})),
    "bcw_provider_requests_total": ("counter", frozenset({"provider", "dialect", "status", "result"})),
    "bcw_retries_total": ("counter", frozenset({"provider", "cause"})),
    "bcw_follows_in_flight": ("gauge", frozenset()),
    "bcw_commands_in_flight": ("gauge", frozenset()),
    "bcw_paused_partitions": ("gauge", frozenset()),
    "bcw_cancel_accepted_seconds": ("histogram", frozenset()),
    "bcw_command_final_seconds": ("histogram", frozenset()),
    "bcw_event_publish_failures_total": ("counter", frozenset()),
    "bcw_commit_lag": ("gauge", frozenset({"partition"})),
    "bcw_follows_restored_total": ("counter", frozenset()),
    "bcw_follow_state_writes_total": ("counter", frozenset({"kind"})),
    "bcw_oldest_follow_age_seconds": ("gauge", frozenset()),
    "bcw_follows_restore_seconds": ("histogram", frozenset()),
    "bcw_partitions_fenced_total": ("counter", frozenset()),
    "bcw_selector_commands_total": ("counter", frozenset({"outcome"})),
    "bcw_selector_matches_total": ("counter", frozenset({"provider"})),
    "bcw_standing_kills": ("gauge", frozenset()),
    "bcw_selector_sweep_failures_total": ("counter", frozenset({"provider", "account"})),
    "bcw_ready": ("gauge", frozenset({"check"})),
    "bcw_provider_throttled_total": ("counter", frozenset({"provider", "account"})),
    "bcw_account_budget_requests_per_s": ("gauge", frozenset({"provider", "account"})),
    "bcw_account_allowed_requests_per_s": ("gauge", frozenset({"provider", "account"})),
    "bcw_account_requests_waiting": ("gauge", frozenset({"provider", "account", "priority"})),
    "bcw_polls_overdue": ("gauge", frozenset({"provider", "account"})),
    # push (issue 28): the webhook receiver's, then the worker's side
    "bcw_webhook_deliveries_total": ("counter", frozenset({"provider", "result"})),
    "bcw_webhook_seconds": ("histogram", frozenset()),
    "bcw_signals_total": ("counter", frozenset({"provider", "result"})),
    "bcw_signal_poll_seconds": ("histogram", frozenset()),
    "bcw_push_polls_saved_total": ("counter", frozenset({"provider"})),
}
# Labels Prometheus adds when scraping through the chart's Service/ServiceMonitor.
TARGET_LABELS = frozenset({"namespace", "pod", "instance", "job", "service", "container", "endpoint"})


def _exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def _metric_base(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and METRICS.get(name.removesuffix(suffix), ("",))[0] == "histogram":
            return name.removesuffix(suffix)
    return name


def test_dashboard_uses_the_workers_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for title, expr in _exprs(dashboard):
        names = set(re.findall(r"\bbcw_[a-z_]+\b", expr))
        assert names, f"{title}: {expr}"
        for name in names:
            base = _metric_base(name)
            assert base in METRICS, f"{title}: unknown metric {name}"
            kind, labels = METRICS[base]
            if kind == "histogram":
                assert name.endswith("_bucket") and "histogram_quantile" in expr, f"{title}: {expr}"
            used.add(base)
            for group in re.findall(r"\bby \(([^)]*)\)", expr):
                for label in (x.strip() for x in group.split(",")):
                    allowed = labels | TARGET_LABELS | ({"le"} if kind == "histogram" else set())
                    assert label in allowed, f"{title}: {base} has no label {label}"
        assert "$__rate_interval" in expr or "rate(" not in expr
    for needed in ("bcw_commands_total", "bcw_retries_total", "bcw_follows_in_flight", "bcw_dead_letters_total",
                   "bcw_cancel_accepted_seconds", "bcw_command_final_seconds", "bcw_follows_restored_total",
                   "bcw_follow_state_writes_total", "bcw_oldest_follow_age_seconds",
                   "bcw_follows_restore_seconds", "bcw_webhook_deliveries_total", "bcw_signal_poll_seconds",
                   "bcw_push_polls_saved_total"):  # fmt: skip
        assert needed in used, needed
    exprs = [e for _, e in _exprs(dashboard)]
    assert any("by (outcome)" in e and "bcw_commands_total" in e for e in exprs)
    assert any("by (provider, cause)" in e for e in exprs)
    assert any("by (kind)" in e and "bcw_follow_state_writes_total" in e for e in exprs)
    assert any("histogram_quantile(0.99," in e and "bcw_follows_restore_seconds_bucket" in e for e in exprs)
    assert any("by (provider, result)" in e and "bcw_webhook_deliveries_total" in e for e in exprs)
    assert any("histogram_quantile(0.99," in e and "bcw_signal_poll_seconds_bucket" in e for e in exprs)
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({q}," in e for e in exprs)


def test_dashboard_metrics_are_registered_by_the_worker() -> None:
    """The dashboard's metric names, kinds and labels are the ones worker/telemetry/metrics.py registers."""
    from prometheus_client import REGISTRY

    import worker.app  # noqa: F401 - imports every module that registers metrics

    registered: dict[str, tuple[str, frozenset[str]]] = {}
    for collector in set(REGISTRY._names_to_collectors.values()):
        name, kind = getattr(collector, "_name", ""), getattr(collector, "_type", "")
        if name.startswith("bcw_"):
            full = f"{name}_total" if kind == "counter" else name
            registered[full] = (kind, frozenset(getattr(collector, "_labelnames", ())))
    from worker.telemetry.metrics import ACCOUNT_METRICS  # a custom collector's families, produced at scrape time

    registered |= {name: ("gauge", frozenset(labels)) for name, labels in ACCOUNT_METRICS.items()}
    assert registered, "no bcw_* metric found: importing worker.app no longer registers the worker's metrics"
    for name, expected in METRICS.items():
        assert registered.get(name) == expected, (
            f"dashboard expects {expected} for {name}; worker: {registered.get(name)}"
        )


def test_dashboard_configmap(chart: Renderer) -> None:
    docs = chart.render({})
    (cm,) = [c for c in _of(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["batch-cancel-worker.json"]) == json.loads(DASHBOARD.read_text())
    assert not [
        c
        for c in _of(chart.render({"dashboard": {"enabled": False}}), "ConfigMap")
        if "dashboard" in c["metadata"]["name"]
    ]
