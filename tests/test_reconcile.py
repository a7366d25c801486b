"""Reconciliation: once per period across all workers, runs a rule matched that never arrived are
counted lost and written, and runs whose feedback changed are processed again."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from lswh_core import contract
from tests.support.faults import wait_for
from tests.support.procs import RedisServer, free_port
from tests.support.stack import Pipeline, StandIn, delivery, fresh_key, fresh_run
from workers.langsmith.door import RuleInfo, points_at, rule_info
from workers.reconcile import ANY_FEEDBACK, feedback_filter, oldest_queued, pass_window, period_index, pick_rules

EVERY, GRACE = 3, 1
PUBLIC_URL = f"https://hooks-{uuid.uuid4().hex[:8]}.example"

# --- decisions (pure) -------------------------------------------------------------------------


def test_a_window_overlaps_the_previous_by_one_period_and_lags_by_the_grace() -> None:
    assert pass_window(1_000.0, 1_100.0, every=60, grace=10, keep=86_400) == (940.0, 1_090.0)


def test_a_first_window_reaches_one_period_back() -> None:
    assert pass_window(None, 1_100.0, every=60, grace=10, keep=86_400) == (1_030.0, 1_090.0)


def test_a_window_never_reaches_past_keep_days() -> None:
    assert pass_window(0.0, 1_000_000.0, every=60, grace=10, keep=3_600) == (996_400.0, 999_990.0)


def test_a_window_ends_before_what_still_waits_in_the_queue() -> None:
    # A delivery queued at 1,050 is not recorded as received yet: runs it may hold are not lost.
    assert pass_window(1_000.0, 1_100.0, every=60, grace=10, keep=86_400, oldest_queued=1_050.0) == (940.0, 1_040.0)
    # A delivery that arrived just now changes nothing.
    assert pass_window(1_000.0, 1_100.0, every=60, grace=10, keep=86_400, oldest_queued=1_100.0) == (940.0, 1_090.0)


def test_the_oldest_queued_delivery_is_read_from_rqs_own_job(redis_server: RedisServer) -> None:
    from rq import Queue

    client = redis.Redis(port=redis_server.port, db=29)
    client.flushdb()
    assert oldest_queued(client) is None
    before = time.time()
    Queue(contract.QUEUE, connection=client).enqueue(contract.DELIVERY_JOB, "f" * 32)
    Queue(contract.QUEUE, connection=client).enqueue(contract.DELIVERY_JOB, "e" * 32)
    first = oldest_queued(client)
    assert first is not None and before - 1 <= first <= time.time()
    client.flushdb()


def test_periods_are_numbered_by_wall_clock() -> None:
    assert period_index(119.9, 60) == period_index(60.0, 60) == 1
    assert period_index(120.0, 60) == 2


def test_late_corrections_add_a_feedback_condition_to_the_rules_filter() -> None:
    assert feedback_filter(None, None) == ANY_FEEDBACK
    assert feedback_filter('eq(name, "chat")', None) == f'and(eq(name, "chat"), {ANY_FEEDBACK})'
    assert feedback_filter(None, ("fix", "label")) == 'or(eq(feedback_key, "fix"), eq(feedback_key, "label"))'


def test_a_webhook_points_here_only_on_a_path_boundary() -> None:
    assert points_at("https://hooks.example.com/webhooks/langsmith?secret=s", "https://hooks.example.com")
    assert points_at("https://hooks.example.com/webhooks/langsmith", "https://hooks.example.com/")
    assert not points_at("https://hooks.example.com.evil/webhooks/langsmith", "https://hooks.example.com")


def test_a_rule_keeps_no_webhook_url() -> None:
    info = rule_info({"id": "r", "project_id": "p", "is_enabled": True, "sampling_rate": 1.0,
                      "webhooks": [{"url": "https://hooks.example.com/w?secret=hunter2"}]}, "https://hooks.example.com")
    assert info.points_here and "hunter2" not in repr(info)


def rule(rule_id: str, **fields: Any) -> RuleInfo:
    base: dict[str, Any] = dict(project_id="p", dataset_id=None, filter=None, trace_filter=None, tree_filter=None,
                                is_enabled=True, sampling_rate=1.0, points_here=False)
    return RuleInfo(id=rule_id, **{**base, **fields})


def test_rules_pointing_here_or_named_are_reconciled_unless_disabled_or_sampled() -> None:
    rules = [rule("here", points_here=True), rule("named"), rule("elsewhere"), rule("off", points_here=True,
             is_enabled=False), rule("sampled", sampling_rate=0.1, points_here=True)]
    chosen, skipped = pick_rules(rules, {"named"})
    assert [r.id for r in chosen] == ["here", "named"]
    assert skipped == ["rule off: disabled", "rule sampled: samples 0.1 of its runs"]


def test_of_many_offers_in_one_period_one_enqueues_the_pass(redis_server: RedisServer) -> None:
    from rq import Queue

    from lswh_core.settings import Settings
    from workers.reconcile import offer_pass

    db = redis.Redis(port=redis_server.port, db=55)
    db.flushdb()
    settings = Settings(reconcile_every=60.0)
    try:
        offers = [offer_pass(db, settings, now=6_000.0 + n) for n in range(5)]  # five workers' ticks
        assert offers == [contract.reconcile_job_id(100), None, None, None, None]
        assert offer_pass(db, settings, now=6_060.0) == contract.reconcile_job_id(101)
        assert Queue(contract.QUEUE, connection=db).get_job_ids() == ["reconcile-100", "reconcile-101"]
        assert offer_pass(db, Settings(), now=6_200.0) is None  # off
    finally:
        db.flushdb()


# --- two workers against the stand-in ---------------------------------------------------------


class Stack:
    def __init__(self, pipeline: Pipeline, metrics_ports: list[int]) -> None:
        self.pipeline = pipeline
        self.metrics_ports = metrics_ports

    def lost(self, rule_id: str) -> float:
        total = 0.0
        for port in self.metrics_ports:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            for match in re.finditer(r'^lswh_runs_lost_total\{rule_id="([^"]+)"\} (\S+)$', text, re.M):
                total += float(match[2]) if match[1] == rule_id else 0.0
        return total

    def worker_output(self) -> str:
        return "\n".join(w.output() for w in self.pipeline.workers)


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn) -> Iterator[Stack]:
    pipeline = Pipeline(redis_server, standin, db=51, workers=0, LANGSMITH_API_KEY=fresh_key(),
                        LSWH_RECONCILE_EVERY=f"{EVERY}s", LSWH_RECONCILE_GRACE=str(GRACE), LSWH_PUBLIC_URL=PUBLIC_URL,
                        LSWH_LOG_FORMAT="text")
    ports = [free_port(), free_port()]
    for port in ports:
        pipeline.add_worker(LSWH_METRICS_PORT=str(port))
    yield Stack(pipeline, ports)
    pipeline.stop()


def rule_pointing_here(standin: StandIn, project: str) -> str:
    hook = {"url": f"{PUBLIC_URL}/webhooks/langsmith?secret=s3cret-for-tests"}
    [rule_id] = standin.add_rules([{"project_id": project, "filter": 'eq(name, "chat")', "webhooks": [hook]}])
    return rule_id


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def test_a_delivery_never_posted_is_written_by_reconciliation_and_counted_lost(stack: Stack,
                                                                                  standin: StandIn) -> None:
    pipeline, project = stack.pipeline, str(uuid.uuid4())
    rule_id = rule_pointing_here(standin, project)
    delivered = fresh_run(session_id=project, name="chat", inputs={"q": "sent"}, outputs={"a": "sent"})
    # Posted and written before LangSmith knows it, so no pass can see it unreceived.
    assert pipeline.post(delivery([delivered], rule_id=rule_id)).status_code == 202
    pipeline.wait_examples([delivered["id"]])
    lost = fresh_run(session_id=project, name="chat", inputs={"q": "lost"}, outputs={"a": "lost"})
    started = now_iso()
    standin.add_runs([{**delivered, "start_time": started}, {**lost, "start_time": started}])

    # Within a period after the grace: the pass that covers `started`, then its job.
    found = pipeline.wait_examples([lost["id"]], timeout=EVERY * 4 + GRACE + 20)
    assert found[lost["id"]][0]["inputs"] == {"q": "lost"}
    wait_for(lambda: stack.lost(rule_id) == 1, 10, "lswh_runs_lost_total{rule_id} is not 1",
             detail=stack.worker_output)
    assert f"found 1 lost runs of rule {rule_id}" in stack.worker_output()
    examples = standin.examples_by_run([delivered["id"], lost["id"]], pipeline.dataset)
    assert [len(examples[r]) for r in (delivered["id"], lost["id"])] == [1, 1]
    # Later passes overlap this window: the run is received now and never counted again.
    passes = count_passes(stack)
    wait_for(lambda: count_passes(stack) >= passes + 2, EVERY * 4 + 20, "no further passes",
             detail=stack.worker_output)
    assert stack.lost(rule_id) == 1
    assert "s3cret-for-tests" not in stack.worker_output()  # the rule's webhook URL is never logged


def test_a_late_correction_updates_its_example_within_one_period(stack: Stack, standin: StandIn) -> None:
    pipeline, project = stack.pipeline, str(uuid.uuid4())
    rule_id = rule_pointing_here(standin, project)
    run = fresh_run(session_id=project, name="chat", start_time=now_iso(), inputs={"q": "2+2?"},
                    outputs={"output": "5"})
    standin.add_runs([run])
    assert pipeline.post(delivery([run], rule_id=rule_id)).status_code == 202
    assert pipeline.wait_examples([run["id"]])[run["id"]][0]["outputs"] == {"output": "5"}

    standin.add_feedback([{"run_id": run["id"], "key": "correctness", "score": 0, "correction": "4"}])

    def corrected() -> bool:
        found = standin.examples_by_run([run["id"]], pipeline.dataset).get(run["id"], [])
        return len(found) == 1 and found[0]["outputs"] == {"output": "4"}

    wait_for(corrected, EVERY * 4 + 20, "the correction did not reach the example",
             detail=stack.worker_output)
    assert stack.lost(rule_id) == 0  # re-checked, not lost


def count_passes(stack: Stack) -> int:
    return len(re.findall(r"reconciliation pass succeeded: period (\d+)", stack.worker_output()))


def test_two_workers_run_one_pass_per_period(stack: Stack) -> None:
    first = count_passes(stack)
    wait_for(lambda: count_passes(stack) >= first + 3, EVERY * 6 + 30, "fewer than 3 passes",
             detail=stack.worker_output)
    periods = Counter(re.findall(r"reconciliation pass succeeded: period (\d+)", stack.worker_output()))
    assert periods and max(periods.values()) == 1, periods
    last = float(stack.pipeline.redis.get(contract.RECONCILE_LAST_SUCCESS_KEY) or 0)
    assert time.time() - last < EVERY * 4 + 20
    scraped = stack.pipeline.http.get("/metrics").text
    assert "lswh_reconcile_last_success_timestamp_seconds" in scraped


SKIPPING_URL = f"https://hooks-{uuid.uuid4().hex[:8]}.example"


@pytest.fixture(scope="module")
def skipping(redis_server: RedisServer, standin: StandIn) -> Iterator[Stack]:
    """Writes only runs with a correction (LSWH_OUTPUTS=correction): others are skipped on purpose."""
    port = free_port()
    pipeline = Pipeline(redis_server, standin, db=56, workers=0, LANGSMITH_API_KEY=fresh_key(),
                        LSWH_OUTPUTS="correction", LSWH_RECONCILE_EVERY=f"{EVERY}s", LSWH_RECONCILE_GRACE=str(GRACE),
                        LSWH_PUBLIC_URL=SKIPPING_URL, LSWH_LOG_FORMAT="text")
    pipeline.add_worker(LSWH_METRICS_PORT=str(port))
    yield Stack(pipeline, [port])
    pipeline.stop()


def test_a_run_skipped_on_purpose_is_never_counted_lost(skipping: Stack, standin: StandIn) -> None:
    from workers.bookkeeping import accounting

    pipeline, project = skipping.pipeline, str(uuid.uuid4())
    hook = {"url": f"{SKIPPING_URL}/webhooks/langsmith"}
    [rule_id] = standin.add_rules([{"project_id": project, "webhooks": [hook]}])
    skipped = fresh_run(session_id=project, name="chat", inputs={"q": "no correction"}, outputs={"a": "model"})
    answer = pipeline.post(delivery([skipped], rule_id=rule_id))
    assert answer.status_code == 202
    wait_for(lambda: (accounting.read(pipeline.redis, answer.json()["delivery_id"]) or {}).get("skipped") == 1, 30,
             "the run was not skipped", detail=skipping.worker_output)
    lost = fresh_run(session_id=project, name="chat", inputs={"q": "lost"}, outputs={"a": "model"})
    started = now_iso()
    standin.add_runs([{**skipped, "start_time": started}, {**lost, "start_time": started}])

    # Found lost, processed, and skipped too for want of a correction; when one comes, it is written.
    wait_for(lambda: skipping.lost(rule_id) == 1, EVERY * 4 + GRACE + 20, "the lost run was not counted",
             detail=skipping.worker_output)
    standin.add_feedback([{"run_id": lost["id"], "key": "review", "correction": {"a": "fixed"}}])
    found = pipeline.wait_examples([lost["id"]], timeout=EVERY * 4 + 20)
    assert found[lost["id"]][0]["outputs"] == {"a": "fixed"}
    passes = count_passes(skipping)
    wait_for(lambda: count_passes(skipping) >= passes + 2, EVERY * 4 + 20, "no further passes",
             detail=skipping.worker_output)
    assert skipping.lost(rule_id) == 1  # the lost run only: the skipped one was received
    assert standin.examples_by_run([skipped["id"]], pipeline.dataset) == {}


def test_every_key_reconciliation_writes_expires(stack: Stack) -> None:
    """Runs after the tests above: passes, lost runs, re-checked corrections."""
    from tests.support.faults import keys_without_ttl

    redis_client = stack.pipeline.redis
    assert redis_client.keys("lswh:rule-runs:*") and redis_client.keys("lswh:reconcile:*")
    assert keys_without_ttl(redis_client) == []
