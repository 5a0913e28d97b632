"""The PrometheusRule: the alert rules file itself (alerts/batch-cancel-worker.rules.yaml, also shipped for a plain
Prometheus), rendered with this release's group, topic and runbook URL, and ``promtool check rules`` on what was
rendered (tests/test_alerts.py unit-tests the rules; tests/e2e/test_prometheus.py runs them).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.renderer import CHART, FULLNAME, RUNBOOK_BASE, VARIANTS, Renderer, _of, _one

pytestmark = pytest.mark.timeout(1800)  # building helm on a cold cache takes minutes


ALERT_RULES = CHART / "alerts" / "batch-cancel-worker.rules.yaml"


def test_prometheus_rule_is_off_by_default(chart: Renderer) -> None:
    assert _of(chart.render({}), "PrometheusRule") == []


def test_prometheus_rule_is_the_rules_file(chart: Renderer) -> None:
    """The PrometheusRule's groups are the plain rules file, changed only where a release differs: its consumer
    group and commands topic in the kafka-exporter selector, and the runbook links' base."""
    docs = chart.render(VARIANTS["existing-secrets"])
    rule = _one(docs, "PrometheusRule")
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    text = ALERT_RULES.read_text()
    expected = yaml.safe_load(
        text.replace('consumergroup="batch-cancel-worker"', 'consumergroup="jobs-cancel"')
        .replace('topic="batch-cancel.commands"', 'topic="jobs.batch-cancel.commands"')
        .replace("runbook_url: docs/runbook.md", f"runbook_url: {RUNBOOK_BASE}docs/runbook.md")
    )
    assert rule["spec"] == expected
    rendered = json.dumps(rule["spec"])
    assert "batch-cancel.commands" not in rendered.replace("jobs.batch-cancel.commands", "")
    assert 'consumergroup=\\"jobs-cancel\\"' in rendered
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert urls and all(u.startswith(f"{RUNBOOK_BASE}docs/runbook.md#") for u in urls)
    # With the defaults the rendered groups are the file exactly.
    default = _one(chart.render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    assert default["spec"] == yaml.safe_load(text)


def test_prometheus_rule_passes_promtool(chart: Renderer, tmp_path: Path) -> None:
    """What the Operator would load, checked by Prometheus' own tool (the plain file: tests/test_alerts.py)."""
    from devstack.prometheus import binary

    rule = _one(chart.render(VARIANTS["existing-secrets"]), "PrometheusRule")
    path = tmp_path / "rendered.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run(
        [binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = sum(1 for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r)
    assert alerts >= 10 and f"SUCCESS: {alerts} rules found" in proc.stdout


def test_bad_runbook_base_fails_at_install(chart: Renderer) -> None:
    assert "runbookBaseUrl" in chart.fails(
        {"prometheusRule": {"enabled": True, "runbookBaseUrl": "https://git.example.com/no-slash"}}
    )
