"""A real Prometheus for the tests and for ``BCW_DEV_PROMETHEUS=1 make dev``: Debian's ``prometheus`` package
(``prometheus`` and ``promtool``), which the tests install with apt-get when missing, the way they install kcat.

Why a real one and not a PromQL parser from PyPI: the point is that what the dashboard and the alerts ask is
what Prometheus itself accepts and answers, against what the worker really exports. The server listens on
loopback only, with its TSDB in a temporary directory, and dies with the process that started it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from devstack.broker import free_port, spawn

__all__ = ["DASHBOARD", "RULES", "Prometheus", "PrometheusError", "binary", "dashboard_queries", "graph_url"]

PACKAGE = "prometheus"
CHART = Path(__file__).resolve().parents[1] / "helm" / "batch-cancel-worker"
RULES = CHART / "alerts" / "batch-cancel-worker.rules.yaml"
DASHBOARD = CHART / "dashboards" / "batch-cancel-worker.json"


def binary(name: str, *, install: bool = True) -> str:
    """``prometheus`` or ``promtool`` from PATH, installing the Debian package once when missing and ``install``
    (CI machines start clean and run as root; elsewhere the message says what to install)."""
    found = shutil.which(name)
    if found:
        return found
    if not install or os.geteuid() != 0:
        raise RuntimeError(f"{name} is not installed and this is not root: run `apt-get install -y {PACKAGE}`")
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE],
    ]
    result: subprocess.CompletedProcess[str] | None = None
    for step in steps:  # without an update first: the package lists are usually fresh enough
        result = subprocess.run(step, env=apt, capture_output=True, text=True, timeout=900, check=False)
        if step[1] == "install" and result.returncode == 0:
            break
    found = shutil.which(name)
    if not found:
        tail = result.stderr[-2000:] if result is not None else ""
        raise RuntimeError(f"could not install {PACKAGE} with apt-get:\n{tail}")
    return found


class PrometheusError(AssertionError):
    """The HTTP API answered an error (e.g. a parse error): the message is Prometheus' own."""


class Prometheus:
    """One Prometheus scraping ``targets`` (host:port) every ``scrape_s`` and evaluating ``rule_files``.

    Every target gets the labels a Kubernetes ServiceMonitor would give it (``namespace``, ``pod``), because the
    dashboard's variables filter on them.
    """

    def __init__(
        self,
        targets: dict[str, str],
        *,
        rule_files: list[Path] | None = None,
        namespace: str = "e2e",
        scrape_s: float = 1.0,
        job: str = "batch-cancel-worker",
        port: int | None = None,
        install: bool = True,
    ) -> None:
        self.port = port or free_port()
        self._install = install
        self.url = f"http://127.0.0.1:{self.port}"
        self.namespace = namespace
        self.scrape_s = scrape_s
        self._dir = Path(tempfile.mkdtemp(prefix="bcw-prometheus-"))
        self.log_path = self._dir / "prometheus.log"
        interval = f"{int(scrape_s * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": [str(p) for p in rule_files or []],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [target], "labels": {"namespace": namespace, "pod": pod}}
                        for pod, target in targets.items()
                    ],
                }
            ],
        }
        self.config_path = self._dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> Prometheus:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = spawn(
            [
                binary("prometheus", install=self._install),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:  # noqa: S310 - our loopback
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "not started"
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """GET an /api/v1 endpoint; its ``data``, or PrometheusError with Prometheus' error text."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - http://127.0.0.1 built above
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now: the result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def wait_for(self, expr: str, timeout: float = 60.0, what: str = "") -> list[dict[str, Any]]:
        """Poll until ``expr`` returns at least one series (a condition written in PromQL), then return it."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or expr}\n{self.log_tail()}")
            time.sleep(self.scrape_s / 2)


def dashboard_queries(namespace: str, rate_interval: str) -> list[tuple[str, str, str]]:
    """(panel title, query, legend) of every target of the chart's dashboard, with Grafana's variables filled in
    as Grafana would: one namespace, pods "All" (the dashboard's allValue ``.*``), ``$__rate_interval``."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (
            panel["title"],
            target["expr"]
            .replace("$__rate_interval", rate_interval)
            .replace("$namespace", namespace)
            .replace("$pod", ".*"),
            target.get("legendFormat", ""),
        )
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def graph_url(base: str, queries: list[str]) -> str:
    """One link to Prometheus' graph page with a panel per query (its ``g<N>.expr`` parameters)."""
    params: dict[str, str] = {}
    for i, query in enumerate(queries):
        params |= {f"g{i}.expr": query, f"g{i}.tab": "0", f"g{i}.range_input": "15m"}
    return f"{base}/graph?{urllib.parse.urlencode(params)}"
