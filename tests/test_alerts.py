"""The alert rules (helm/batch-cancel-worker/alerts/batch-cancel-worker.rules.yaml), checked offline:

- ``promtool check rules`` and ``promtool test rules`` (tests/alerts/batch-cancel-worker.test.yaml: for each
  alert, series that must fire it and series that must not);
- the unit tests themselves guarded: with any one alert made to never fire, or to always fire, they fail, so
  no alert is left without a must-fire and a must-not-fire case;
- every alert has a severity, a summary and a runbook_url whose anchor is a section of docs/runbook.md, and
  every section there is an alert;
- every ``bcw_*`` metric and label the rules use is one the worker registers.

The chart's PrometheusRule (the same file, rendered) is checked in tests/deploy/test_alert_rules.py; every expression is
evaluated by a real Prometheus scraping a real worker in tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.prometheus import binary

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "helm" / "batch-cancel-worker" / "alerts" / "batch-cancel-worker.rules.yaml"
UNIT_TESTS = REPO / "tests" / "alerts" / "batch-cancel-worker.test.yaml"
RUNBOOK = REPO / "docs" / "runbook.md"

SEVERITIES = {"critical", "warning"}
# Metrics the rules read that the worker does not export, with where they come from.
EXTERNAL_METRICS = {"kafka_consumergroup_lag": "kafka-exporter (danielqsj/kafka_exporter), per partition"}
# Labels Prometheus adds when scraping (Kubernetes discovery through the ServiceMonitor, or static configs).
TARGET_LABELS = frozenset({"namespace", "pod", "instance", "job", "service", "container", "endpoint"})


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="session")
def promtool() -> str:
    try:
        return binary("promtool")
    except RuntimeError as exc:
        pytest.fail(str(exc))


def _run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules(promtool: str) -> None:
    proc = _run(promtool, "check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in proc.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    proc = _run(promtool, "test", "rules", UNIT_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _with_expr(tmp: Path, alert: str, mutate: str) -> Path:
    """A copy of the rules with one alert's expression rewritten (``mutate`` formats ``{expr}``), and that alert's
    unit tests pointed at it."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = mutate.format(expr=rule["expr"])
    (tmp / "rules.yaml").write_text(yaml.safe_dump(doc))
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = ["rules.yaml"]
    # Only the cases about this alert: the others cannot name it, and running them for every alert in turn
    # made this the slowest check of the suite.
    tests["tests"] = [t for t in tests["tests"] if any(c.get("alertname") == alert for c in t["alert_rule_test"])]
    (tmp / "tests.yaml").write_text(yaml.safe_dump(tests))
    return tmp / "tests.yaml"


MUTATIONS = {
    # Fails only a must-fire case.
    "never fires": "vector(1) < 0",
    # The same alerts wherever the rule fires, plus one whenever its expression is false everywhere: fails only
    # a must-not-fire case in which the expression is false (a neighbour next to a firing series, or an alert
    # still pending, would not catch it).
    "fires when it should not": "({expr}) or on() vector(1)",
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_unit_tests_catch_an_alert_that_is_broken(promtool: str, tmp_path: Path, mutation: str) -> None:
    """Guards the guard: for each alert in turn, a broken copy of its rule must fail the unit tests, with
    promtool naming that alert. So every alert has a case that must fire and one that must not."""
    names = [a["alert"] for a in alerts()]

    def run(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        work = tmp_path / name
        work.mkdir()
        return name, _run(promtool, "test", "rules", _with_expr(work, name, MUTATIONS[mutation]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(run, names))
    survived = [
        name
        for name, proc in results.items()
        if proc.returncode == 0 or f"alertname: {name}," not in proc.stdout + proc.stderr
    ]
    assert not survived, f"the unit tests still pass with these alerts broken ({mutation}): {survived}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_is_labelled_and_has_a_runbook_section() -> None:
    sections = {_anchor(m.group(1)): m.group(1) for m in re.finditer(r"^## (.+)$", RUNBOOK.read_text(), re.MULTILINE)}
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alerts():
        name = rule["alert"]
        assert re.fullmatch(r"Bcw[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbook.md#{name.lower()}", f"{name}: runbook_url {url}"
        assert name.lower() in sections, f"{name}: docs/runbook.md has no section '## {name}'"
    alert_sections = {a for a, heading in sections.items() if heading.startswith("Bcw")}
    assert alert_sections == {n.lower() for n in names}, "runbook sections without an alert, or alerts without one"


def _registered() -> dict[str, frozenset[str]]:
    """Every bcw_* series name the worker exports (counters with _total, histograms with their parts) and its
    labels, read from the prometheus_client registry after importing the app."""
    from prometheus_client import REGISTRY

    import worker.app  # noqa: F401 - registers every metric

    out: dict[str, frozenset[str]] = {}
    for collector in set(REGISTRY._names_to_collectors.values()):
        name, kind = getattr(collector, "_name", ""), getattr(collector, "_type", "")
        labels = frozenset(getattr(collector, "_labelnames", ()))
        if not name.startswith("bcw_"):
            continue
        if kind == "counter":
            out[f"{name}_total"] = labels
        elif kind == "histogram":
            out.update({f"{name}_count": labels, f"{name}_sum": labels, f"{name}_bucket": labels | {"le"}})
        else:
            out[name] = labels
    from worker.telemetry.metrics import ACCOUNT_METRICS  # families of a custom collector, read at scrape time

    out.update({name: frozenset(labels) for name, labels in ACCOUNT_METRICS.items()})
    return out


def test_rules_use_only_metrics_and_labels_that_exist() -> None:
    registered = _registered()
    for rule in alerts():
        expr, name = rule["expr"], rule["alert"]
        metrics = set(re.findall(r"\b((?:bcw|kafka)_[a-z_]+)\b", expr))
        assert metrics, name
        known: set[str] = set(TARGET_LABELS)
        for metric in metrics:
            if metric in EXTERNAL_METRICS:
                known |= {"consumergroup", "topic", "partition"}
                continue
            assert metric in registered, f"{name}: the worker exports no {metric}"
            known |= registered[metric]
        for metric, matchers in re.findall(r"\b(bcw_[a-z_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in registered[metric] | TARGET_LABELS, f"{name}: {metric} has no label {label}"
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in known, f"{name}: no metric of `{expr}` has a label {label}"
