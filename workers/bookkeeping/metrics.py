"""A worker process's Prometheus metrics, served on its own port (LSWH_METRICS_PORT).

Why a port per worker process and not counters in Redis: workers run on many hosts (compose
replicas, k8s pods), where prometheus-client's multiprocess mode cannot combine them, and a
process's own counters are what Prometheus expects: rate() and increase() handle a restart, and
no ingress replica re-exports (and so double-counts) them. Prometheus finds the workers by
service discovery (deploy/prometheus.yml, the k8s pod annotations).

The recording functions below are what the job path calls; each keeps its labels bounded.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from lswh_core import metrics as m
from lswh_core.masks import mask

log = logging.getLogger("lswh.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)


def _counter(spec: m.Metric) -> Counter:
    return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=REGISTRY)


def _histogram(spec: m.Metric) -> Histogram:
    return Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=REGISTRY)


RUNS = _counter(m.RUNS)
UPSTREAM_REQUESTS = _counter(m.UPSTREAM_REQUESTS)
UPSTREAM_SECONDS = _histogram(m.UPSTREAM_SECONDS)
RATE_LIMITED = _counter(m.RATE_LIMITED)
BUDGET_WAIT = _histogram(m.BUDGET_WAIT)
SLICE_SECONDS = _histogram(m.SLICE_SECONDS)
SLICE_RUNS = _histogram(m.SLICE_RUNS)
RUNS_LOST = _counter(m.RUNS_LOST)
INFO_WAITING = Gauge(m.LANGSMITH_INFO_WAITING.name, m.LANGSMITH_INFO_WAITING.help, registry=REGISTRY)

# Every outcome exists from the start at 0, so rate() sees the first one and dashboards show 0,
# not "no data".
for _outcome in m.RUN_OUTCOMES:
    if _outcome != "failed":
        RUNS.labels(_outcome, "")
for _reason in m.REASON_CLASSES:
    RUNS.labels("failed", _reason)

_STATUS_WORDS = frozenset({"timeout", "connect_error", "error"})


def serve(port: int) -> int | None:
    """Start the metrics endpoint on its own thread; the port it listens on, None if off.

    A port taken (two workers on one host sharing LSWH_METRICS_PORT) costs this worker its
    metrics, not its jobs: it warns and runs on. Prometheus shows that target down.
    """
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, registry=REGISTRY)
    except OSError as exc:
        log.warning("metrics not served: port %d unavailable (%s); give each worker on one host its own "
                    "LSWH_METRICS_PORT, or 0 to turn metrics off", port, exc.strerror or type(exc).__name__)
        return None
    return int(server.server_address[1])


def count_runs(outcome: str, n: int = 1, reason_class: str | None = None) -> None:
    """Runs that reached an outcome (lswh_core.metrics.RUN_OUTCOMES); failed ones by reason class."""
    if outcome not in m.RUN_OUTCOMES:
        raise ValueError(f"unknown run outcome {outcome!r}")
    if outcome == "failed":
        label = reason_class if reason_class in m.REASON_CLASSES else "other"
    else:
        label = ""
    RUNS.labels(outcome, label).inc(n)


def observe_request(service: str, route: str, status: str, seconds: float) -> None:
    """One request to LangSmith or S3. `route` is a template ("GET /runs/{id}", "s3 GET"), never
    a URL; `status` the HTTP status or timeout / connect_error / error."""
    if service not in m.SERVICES:
        raise ValueError(f"unknown service {service!r}")
    route = bounded_route(route)
    status = status if (status.isdigit() and len(status) == 3) or status in _STATUS_WORDS else "error"
    UPSTREAM_REQUESTS.labels(service, route, status).inc()
    UPSTREAM_SECONDS.labels(service, route).observe(seconds)


def count_rate_limited(route: str) -> None:
    RATE_LIMITED.labels(bounded_route(route)).inc()


def observe_budget_wait(route: str, seconds: float) -> None:
    BUDGET_WAIT.labels(bounded_route(route)).observe(seconds)


def observe_slice(seconds: float, runs: int) -> None:
    SLICE_SECONDS.observe(seconds)
    SLICE_RUNS.observe(runs)


def count_lost(rule_id: str, n: int = 1) -> None:
    """Runs reconciliation found missing, per rule (a deployment's rules are few: see the spec)."""
    RUNS_LOST.labels(rule_id).inc(n)


def set_info_waiting(waiting: bool) -> None:
    """Whether this worker waits for LangSmith's /info (and so takes no jobs)."""
    INFO_WAITING.set(1 if waiting else 0)


def bounded_route(route: str) -> str:
    """A route template as given; should a caller pass a real path, its query string goes and its
    ids become placeholders, so neither a presigned URL nor one series per run can reach a label."""
    route = route.split("?", 1)[0]
    if "://" in route:
        scheme, _, rest = route.partition("://")
        route = f"{scheme}://{rest.split('/', 1)[0]}"  # the host alone
    return mask(route)
