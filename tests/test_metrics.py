"""Metrics: each delivery moves exactly its counter, the queue's figures are read from Redis at
scrape time, each worker serves its own, and no label carries a secret, a URL or a run id."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lswh_core import metrics as m
from tests.support import metric_specs as specs
from tests.support.procs import RedisServer, free_port, lswh, running, wait_http, wait_until
from tests.support.stack import SECRET, Pipeline, StandIn, delivery, fresh_run

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
LIMIT = 4096


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def idle(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    """An ingress with no worker: what it stores stays queued."""
    stack = Pipeline(redis_server, standin, db=44, workers=0, LSWH_MAX_BODY_BYTES=str(LIMIT))
    stack.redis.flushdb()
    yield stack
    stack.stop()


# --- the names ----------------------------------------------------------------------------------


def test_metric_names_are_unique_prefixed_and_label_nothing_unbounded() -> None:
    names = [metric.name for metric in specs.ALL]
    assert len(names) == len(set(names))
    for metric in specs.ALL:
        assert re.fullmatch(r"lswh_[a-z0-9_]+", metric.name), metric.name
        assert metric.help.strip(), metric.name
        assert not set(metric.labels) & set(specs.FORBIDDEN_LABELS), metric.name
        assert metric.name.endswith("_total") == (metric.kind == "counter"), metric.name
        assert bool(metric.buckets) == (metric.kind == "histogram"), metric.name


# --- the ingress ----------------------------------------------------------------------------------


def test_each_delivery_outcome_moves_exactly_its_counter(idle: Pipeline) -> None:
    before = scrape(f"{idle.url}/metrics")
    body = delivery([fresh_run(inputs={"q": 1}), fresh_run(inputs={"q": 2})])
    assert idle.post(body).status_code == 202
    assert idle.post(body).status_code == 202  # the same body again: a duplicate
    assert idle.post(body, secret="wrong").status_code == 401
    assert idle.post(None, raw=b"{not json").status_code == 400
    assert idle.post(None, raw=b"x" * (LIMIT + 1)).status_code == 413
    after = scrape(f"{idle.url}/metrics")

    moved = {outcome: value(after, "lswh_deliveries_total", outcome=outcome)
             - value(before, "lswh_deliveries_total", outcome=outcome) for outcome in m.DELIVERY_OUTCOMES}
    assert moved == {"accepted": 1, "duplicate": 1, "unauthorized": 1, "bad_request": 1, "too_large": 1,
                     "timeout": 0, "unavailable": 0}
    assert value(after, "lswh_ingress_runs_total") - value(before, "lswh_ingress_runs_total") == 2
    count = "lswh_ingress_request_duration_seconds_count"
    assert value(after, count) - value(before, count) == 5
    # Bodies read: two accepted/duplicate bodies and the 400's; neither the 401's nor the 413's.
    sizes = "lswh_ingress_request_body_bytes_count"
    assert value(after, sizes) - value(before, sizes) == 3


def test_a_body_dribbled_past_the_deadline_counts_as_timeout(idle: Pipeline) -> None:
    import socket

    from ingress.body import BODY_TIMEOUT_SECONDS

    before = value(scrape(f"{idle.url}/metrics"), "lswh_deliveries_total", outcome="timeout")
    with socket.create_connection(("127.0.0.1", idle.port), timeout=BODY_TIMEOUT_SECONDS + 10) as conn:
        conn.sendall(f"POST /webhooks/langsmith?secret={SECRET} HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: 100\r\n\r\n{\"runs\"".encode())  # and nothing more
        assert conn.recv(64).startswith(b"HTTP/1.1 408")
    after = value(scrape(f"{idle.url}/metrics"), "lswh_deliveries_total", outcome="timeout")
    assert after - before == 1


def test_queue_figures_are_read_from_redis_at_scrape_time(idle: Pipeline) -> None:
    idle.redis.flushdb()
    empty = scrape(f"{idle.url}/metrics")
    assert value(empty, "lswh_redis_up") == 1
    assert value(empty, "lswh_queue_depth", queue="lswh") == 0
    assert value(empty, "lswh_queue_oldest_age_seconds", queue="lswh") == 0
    for n in range(2):
        assert idle.post(delivery([fresh_run(inputs={"n": n})])).status_code == 202
    queued = scrape(f"{idle.url}/metrics")
    assert value(queued, "lswh_queue_depth", queue="lswh") == 2
    assert 0 < value(queued, "lswh_queue_oldest_age_seconds", queue="lswh") < 60
    assert value(queued, "lswh_jobs_failed", queue="lswh") == 0
    assert value(queued, "lswh_workers", state="idle") == 0


def test_redis_down_counts_unavailable_and_scrapes_still_answer(tmp_path) -> None:
    port = free_port()
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "LSWH_SECRETS": SECRET}
    with running(lswh("ingress", "--port", str(port), env=env, name="ingress-no-redis")) as ingress:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", ingress)
        answer = httpx.post(f"{url}/webhooks/langsmith", params={"secret": SECRET},
                            json=delivery([fresh_run(inputs={"q": 1})]), timeout=10)
        assert answer.status_code == 503
        samples = scrape(f"{url}/metrics")
    assert value(samples, "lswh_deliveries_total", outcome="unavailable") == 1
    assert value(samples, "lswh_redis_up") == 0


# --- the workers ----------------------------------------------------------------------------------


def test_worker_serves_its_own_metrics_and_is_counted_live(idle: Pipeline) -> None:
    port = free_port()
    idle.add_worker(LSWH_METRICS_PORT=str(port))
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200,
               timeout=60, what="worker metrics port")
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "lswh_runs_total", outcome="written", reason_class="") == 0  # present from the start
    assert ("lswh_runs_total", frozenset({("outcome", "failed"), ("reason_class", "permanent")})) in samples
    wait_until(lambda: value(scrape(f"{idle.url}/metrics"), "lswh_workers", state="idle")
               + value(scrape(f"{idle.url}/metrics"), "lswh_workers", state="busy") >= 1,
               timeout=30, what="the worker counted live")
    idle.wait_idle(timeout=60)  # what the other tests queued is processed
    assert value(scrape(f"{idle.url}/metrics"), "lswh_queue_depth", queue="lswh") == 0


def test_recording_functions_count_with_bounded_labels() -> None:
    from workers.bookkeeping import metrics as wm

    def now() -> Samples:
        return parse(generate_latest(wm.REGISTRY).decode())

    before = now()
    wm.count_runs("written", 3)
    wm.count_runs("failed", reason_class="permanent")
    wm.count_runs("failed", reason_class="something new")
    wm.observe_request("s3", "https://bucket.s3.amazonaws.com/a/b?X-Amz-Signature=abc", "200", 0.02)
    wm.observe_request("langsmith", "GET /runs/0f8e2b1c-1234-4abc-9def-0123456789ab", "503", 0.1)
    wm.count_rate_limited("POST /api/v2/runs/query")
    wm.observe_budget_wait("POST /api/v2/runs/query", 1.5)
    wm.observe_slice(2.0, 100)
    wm.count_lost("rule-1", 2)
    after = now()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("lswh_runs_total", outcome="written", reason_class="") == 3
    assert moved("lswh_runs_total", outcome="failed", reason_class="permanent") == 1
    assert moved("lswh_runs_total", outcome="failed", reason_class="other") == 1
    assert moved("lswh_upstream_requests_total", service="s3", route="https://bucket.s3.amazonaws.com",
                 status="200") == 1
    assert moved("lswh_upstream_requests_total", service="langsmith", route="GET /runs/<uuid>", status="503") == 1
    assert moved("lswh_rate_limited_total", route="POST /api/v2/runs/query") == 1
    assert moved("lswh_budget_wait_seconds_sum", route="POST /api/v2/runs/query") == 1.5
    assert moved("lswh_slice_runs_sum") == 100
    assert moved("lswh_runs_lost_total", rule_id="rule-1") == 2
    text = generate_latest(wm.REGISTRY).decode()
    assert "Signature" not in text and "0f8e2b1c" not in text
    with pytest.raises(ValueError):
        wm.count_runs("exploded")


@pytest.mark.parametrize("raw", ["-1", "70000", "port"])
def test_a_bad_metrics_port_stops_start_up_naming_the_variable(raw: str) -> None:
    from lswh_core.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="LSWH_METRICS_PORT"):
        Settings.from_env({"LSWH_METRICS_PORT": raw})
    assert Settings.from_env({"LSWH_METRICS_PORT": "0"}).metrics_port == 0
    assert Settings.from_env({}).metrics_port == 9100


def test_a_worker_whose_metrics_port_is_taken_warns_and_runs_on() -> None:
    import socket

    from workers.bookkeeping.metrics import serve

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        assert serve(taken.getsockname()[1]) is None
    assert serve(0) is None
