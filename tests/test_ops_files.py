"""The shipped operations files: Prometheus config and alert rules (promtool), the Grafana
dashboard (json), scrape ports and annotations, and that every metric they use is exported by a
process `lswh dev --workers 2` starts, each of which is scraped here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import crossplane
import httpx
import pytest
import yaml

from lswh_core import metrics as m
from lswh_core.settings import Settings
from tests.support import metric_specs as specs
from tests.support.procs import ROOT, Proc, free_port, lswh

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "alerts.yml"
ALERT_TESTS = ROOT / "tests" / "promtool" / "alerts_test.yml"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian package `prometheus`; .ci/run installs it)")
METRIC_NAME = re.compile(r"\blswh_[a-z0-9_]+\b")
# What the issue asks the shipped rules to watch, by the metric each one reads.
REQUIRED_ALERT_METRICS = {
    "lswh_queue_oldest_age_seconds",  # oldest queued job older than N minutes
    "lswh_jobs_failed",  # failed jobs growing
    "lswh_deliveries_total",  # ingress 503s
    "lswh_budget_wait_seconds_sum",  # rate budget saturated
    "lswh_ingress_request_duration_seconds_bucket",  # ingress p99 over 1 s
    "lswh_reconcile_last_success_timestamp_seconds",  # reconciliation too old
    "lswh_runs_lost_total",  # lost runs
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    queries = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            queries += [target["expr"] for target in panel["targets"]]
    return queries


def k8s(path: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / path).read_text()) if doc]


# --- parsers ------------------------------------------------------------------------------------


@needs_promtool
def test_prometheus_config_passes_promtool() -> None:
    result = promtool("check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


@needs_promtool
def test_alert_rules_pass_promtool_and_fire_as_their_unit_tests_say() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alert_rules_cover_what_an_operator_must_hear_about() -> None:
    rules = alert_rules()
    used = {name for rule in rules for name in METRIC_NAME.findall(rule["expr"])}
    assert REQUIRED_ALERT_METRICS <= used
    for rule in rules:
        assert rule["alert"].startswith("Lswh") and rule["labels"]["severity"] in ("page", "ticket"), rule
        assert rule["annotations"]["summary"], rule


def test_rules_over_queue_figures_take_max_across_ingress_replicas() -> None:
    queue_metrics = {metric.name for metric in m.QUEUE_METRICS}
    for expr in [rule["expr"] for rule in alert_rules()] + dashboard_queries():
        if set(METRIC_NAME.findall(expr)) & queue_metrics:
            assert re.search(r"\b(max|min)(\s+by\s*\([^)]*\))?\s*\(", expr), expr


def test_grafana_dashboards_parse_with_a_query_in_every_panel() -> None:
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["title"] and dashboard["uid"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in dashboard["panels"]:
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


# --- where Prometheus looks ---------------------------------------------------------------------


def test_scrape_ports_are_the_ones_the_processes_listen_on() -> None:
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    ingress_port = compose["ingress"]["command"][compose["ingress"]["command"].index("--port") + 1]
    assert jobs["lswh-ingress"]["dns_sd_configs"] == [
        {"names": ["ingress"], "type": "A", "port": int(ingress_port), "refresh_interval": "30s"}]
    assert jobs["lswh-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert jobs["lswh-worker"]["dns_sd_configs"][0]["port"] == Settings().metrics_port
    assert str(Settings().metrics_port) in compose["worker"]["expose"]
    assert compose["prometheus"]["profiles"] == ["monitoring"]
    mounted = {v.split(":")[0] for v in compose["prometheus"]["volumes"]}
    assert {"./deploy/prometheus.yml", "./deploy/alerts.yml"} <= mounted


def test_kubernetes_pods_are_annotated_for_scraping_on_their_metrics_ports() -> None:
    expected = {"lswh-ingress": 8000, "lswh-worker": Settings().metrics_port}
    for path in ("ingress.yaml", "worker.yaml"):
        for doc in k8s(path):
            if doc["kind"] != "Deployment":
                continue
            template = doc["spec"]["template"]
            annotations = template["metadata"]["annotations"]
            port = expected[doc["metadata"]["name"]]
            assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                   "prometheus.io/path": "/metrics"}
            ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            assert port in ports
    (monitor,) = k8s("monitoring/podmonitor.yaml")
    named = {p["port"] for p in monitor["spec"]["podMetricsEndpoints"]}
    assert named == {"http", "metrics"}


def test_neither_shipped_proxy_forwards_metrics_from_outside() -> None:
    parsed = crossplane.parse(str(DEPLOY / "nginx.conf"), single=True)
    assert parsed["status"] == "ok", parsed["errors"]
    proxied = []

    def walk(block: list[dict[str, Any]], location: list[str] | None) -> None:
        for directive in block:
            if directive["directive"] == "proxy_pass":
                proxied.append(location)
            inner = directive["args"] if directive["directive"] == "location" else location
            walk(directive.get("block", []), inner)

    walk(parsed["config"][0]["parsed"], None)
    assert proxied == [["=", "/webhooks/langsmith"], ["=", "/readyz"]]
    (ingress,) = [d for d in k8s("ingress.yaml") if d["kind"] == "Ingress"]
    paths = [(p["path"], p["pathType"]) for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == [("/webhooks/langsmith", "Exact")]


# --- against running processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`lswh dev --workers 2`, and the metrics URLs it prints."""
    proc = lswh("dev", "--workers", "2", "--port", str(free_port()), "--dashboard-port", str(free_port()),
                env={"LSWH_SECRETS": "ops-files-secret"}, name="lswh-dev-ops")
    try:
        yield printed(proc)
    finally:
        proc.stop()


def printed(proc: Proc, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = proc.output().splitlines()
        if any(line.startswith("REDIS_URL=") for line in lines):
            found = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines if ": " in line
                     and line.split(": ", 1)[0] in ("Metrics", "Worker metrics")}
            return {"ingress": found["Metrics"], "workers": found["Worker metrics"].split()}
        if not proc.alive():
            pytest.fail(f"lswh dev exited {proc.popen.returncode}:\n{proc.output()}")
        time.sleep(0.2)
    pytest.fail(f"lswh dev printed nothing within {timeout}s:\n{proc.output()}")


def exported(text: str) -> set[str]:
    """Every sample name a scrape can carry, from the TYPE lines (present even with no sample yet)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_lswh_dev_serves_metrics_from_every_process_it_starts(dev: dict[str, Any]) -> None:
    urls = [dev["ingress"], *dev["workers"]]
    assert len(dev["workers"]) == 2 and len(set(urls)) == 3
    for url in urls:
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200, url
    ingress = httpx.get(dev["ingress"], timeout=10).text
    assert {s for metric in m.INGRESS_METRICS + m.QUEUE_METRICS for s in specs.sample_names(metric)
            } - {m.RECONCILE_LAST_SUCCESS.name} <= exported(ingress)
    for url in dev["workers"]:
        assert {s for metric in m.WORKER_METRICS for s in specs.sample_names(metric)} <= exported(
            httpx.get(url, timeout=10).text)


def test_every_metric_the_dashboard_and_rules_use_is_exported(dev: dict[str, Any]) -> None:
    texts = [httpx.get(url, timeout=10).text for url in (dev["ingress"], *dev["workers"])]
    names = set().union(*(exported(text) for text in texts))
    # Exported once the first reconciliation pass has finished (the ingress reads it from Redis).
    names.add(m.RECONCILE_LAST_SUCCESS.name)
    used = {name for expr in [r["expr"] for r in alert_rules()] + dashboard_queries()
            for name in METRIC_NAME.findall(expr)}
    assert used and used <= names, used - names
    declared = {s for metric in specs.ALL for s in specs.sample_names(metric)}
    assert used <= declared
