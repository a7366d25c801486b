"""Against LangSmith as it really is (the stand-in with Cloud's limits on): bulk run reads, one
rate budget for every worker, metadata that survives updates, both read paths, 429 storms."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langsmith import Client
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.utils import now

from lswh_core import contract
from tests.support.procs import RedisServer
from tests.support.stack import Pipeline, StandIn, delivery, fresh_key, fresh_run

RUN_READS = ("POST /api/v2/runs/query", "POST /runs/query", "GET /runs/{run_id}", "GET /api/v2/runs/{run_id}")


CLOUD_DBS = itertools.count(57)  # a database per test of the `cloud` fixture: 57..63, used by no other module


def api_only_runs(standin: StandIn, n: int) -> list[dict[str, Any]]:
    """Shaped like the docs' example payload: inputs, outputs and both S3 URL fields null, so only
    the API has the runs' data."""
    runs = [fresh_run() for _ in range(n)]
    standin.add_runs([{**run, "inputs": {"q": i}, "outputs": {"a": i}} for i, run in enumerate(runs)])
    return runs


def counts(standin: StandIn) -> dict[str, int]:
    stats = standin.stats()
    requests = stats["requests"]
    return {"reads": sum(v for k, v in requests.items() if any(k.endswith(r) for r in RUN_READS)),
            "v2": sum(v for k, v in requests.items() if k.endswith("POST /api/v2/runs/query")),
            "v1": sum(v for k, v in requests.items() if k.endswith("POST /runs/query")),
            "429": int(stats["rate_limited_total"])}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


def accounted(stack: Pipeline, response: Any, runs: int, timeout: float = 120.0) -> dict[str, int]:
    assert response.status_code == 202, response.text
    return stack.wait_accounted(response.json()["delivery_id"], runs, timeout)


@pytest.fixture
def cloud(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    stack = Pipeline(redis_server, standin, db=next(CLOUD_DBS), LANGSMITH_API_KEY=fresh_key())
    stack.redis.flushdb()
    yield stack
    stack.stop()


def test_150_api_only_runs_land_on_one_worker_with_a_handful_of_reads(cloud: Pipeline, standin: StandIn) -> None:
    runs = api_only_runs(standin, 150)
    before = counts(standin)
    figures = accounted(cloud, cloud.post(delivery(runs)), 150)
    assert (figures["written"], figures["failed"]) == (150, 0), figures
    used = delta(before, counts(standin))
    assert used["reads"] < 10, used
    assert used["429"] == 0, used
    examples = standin.examples_by_run([r["id"] for r in runs], cloud.dataset)
    assert {r["id"]: examples[r["id"]][0]["outputs"] for r in runs} == {r["id"]: {"a": i} for i, r in enumerate(runs)}


def test_four_deliveries_on_two_workers_share_one_budget(redis_server: RedisServer, standin: StandIn) -> None:
    """v2 run queries squeezed to 2 per 5 s on both sides (ours through the older name `run_query`,
    which still governs the v2 query too): 6 deliveries of one query each (a slice reads one
    page), so two workers that did not share their budget would meet 429s."""
    standin.admin("POST", "limits", {"limits": {"v2_run_query": {"count": 2, "seconds": 5}}})
    stack = Pipeline(redis_server, standin, db=27, workers=2, LANGSMITH_API_KEY=fresh_key(),
                     LSWH_LANGSMITH_RATE_LIMITS="run_query=2/5s")
    try:
        stack.redis.flushdb()
        batches = [api_only_runs(standin, 150) for _ in range(6)]
        before = counts(standin)
        responses = [stack.post(delivery(runs)) for runs in batches]
        for response, runs in zip(responses, batches, strict=True):
            figures = accounted(stack, response, len(runs), timeout=180)
            assert (figures["written"], figures["failed"]) == (150, 0), figures
        used = delta(before, counts(standin))
        assert used["v2"] >= 6
        assert used["429"] <= 2, used  # a handful at most: the budget is shared, not per worker
    finally:
        standin.admin("POST", "limits", {"cloud": True})
        stack.stop()


def test_metadata_and_split_added_by_a_reviewer_survive_an_update(cloud: Pipeline, standin: StandIn) -> None:
    run = fresh_run(inputs={"q": 1}, outputs={"a": "model"})
    accounted(cloud, cloud.post(delivery([run])), 1)
    [example] = standin.examples_by_run([run["id"]], cloud.dataset)[run["id"]]
    reviewer = Client(api_url=standin.url, api_key=cloud.env["LANGSMITH_API_KEY"], auto_batch_tracing=False)
    reviewer.update_example(example["id"], metadata={**example["metadata"], "reviewed_by": "ana"}, split="test")
    standin.add_feedback([{"run_id": run["id"], "key": "correctness", "correction": "human"}])
    accounted(cloud, cloud.post(delivery([run], end_time="2024-04-06T00:00:00+00:00")), 1)
    [updated] = standin.examples_by_run([run["id"]], cloud.dataset)[run["id"]]
    assert updated["outputs"] == {"output": "human"}
    assert updated["metadata"]["reviewed_by"] == "ana"
    assert updated["metadata"]["dataset_split"] == ["test"]
    assert updated["metadata"]["run_id"] == run["id"]


def test_requeued_run_whose_delivery_expired_is_read_through_the_v2_query(cloud: Pipeline,
                                                                         standin: StandIn) -> None:
    run = fresh_run()  # the API does not know it yet: it fails visibly
    response = cloud.post(delivery([run]))
    accounted(cloud, response, 1)
    [job] = [j for j in cloud.failed_jobs() if j.func_name == contract.RUN_JOB]
    assert job.args[3:] == (run["session_id"], run["start_time"])  # where to find it, no URL
    cloud.redis.delete(contract.delivery_key(response.json()["delivery_id"]))  # LSWH_REPLAY_DAYS passed
    standin.add_runs([{**run, "inputs": {"q": "late"}, "outputs": {"a": "late"}}])
    before = counts(standin)
    FailedJobRegistry(queue=Queue(contract.QUEUE, connection=cloud.redis)).requeue(job.id)
    example = cloud.wait_examples([run["id"]])[run["id"]][0]
    assert (example["inputs"], example["outputs"]) == ({"q": "late"}, {"a": "late"})
    assert delta(before, counts(standin))["v2"] == 1


def test_failed_job_of_the_old_argument_shape_still_requeues(cloud: Pipeline, standin: StandIn) -> None:
    """Failed jobs stay 30 days: those split off before jobs kept project and start time carry
    (delivery id, run id, rule id) only; the run is then found by id (v1, which Cloud still has)."""
    run = fresh_run()
    standin.add_runs([{**run, "inputs": {"q": "old"}, "outputs": {"a": "old"}}])
    queue = Queue(contract.QUEUE, connection=cloud.redis)
    job = Job.create(contract.RUN_JOB, args=("0" * 32, run["id"], None), connection=cloud.redis,
                     id=contract.run_job_id("0" * 32, run["id"]), origin=queue.name)
    job.ended_at = now()
    job.save()
    FailedJobRegistry(queue=queue).add(job, exc_string="run: old failure")
    FailedJobRegistry(queue=queue).requeue(job.id)
    example = cloud.wait_examples([run["id"]])[run["id"]][0]
    assert (example["inputs"], example["outputs"]) == ({"q": "old"}, {"a": "old"})


@pytest.mark.parametrize(("profile", "path"), [("cloud", "v2"), ("v1-only", "v1")])
def test_both_read_paths_by_instance_flags(redis_server: RedisServer, standin: StandIn, profile: str,
                                          path: str) -> None:
    standin.admin("POST", "info", {"profile": profile})
    stack = Pipeline(redis_server, standin, db=28, LANGSMITH_API_KEY=fresh_key())
    try:
        stack.redis.flushdb()
        runs = api_only_runs(standin, 30)
        before = counts(standin)
        figures = accounted(stack, stack.post(delivery(runs)), 30)
        assert figures["written"] == 30, figures
        used = delta(before, counts(standin))
        other = "v1" if path == "v2" else "v2"
        assert used[path] >= 1 and used[other] == 0, used
    finally:
        standin.admin("POST", "info", {"profile": "cloud"})
        stack.stop()


def test_429_storm_pauses_and_recovers_without_failing_a_run(redis_server: RedisServer, standin: StandIn) -> None:
    # A short run-query window on our side, so each pause (a whole window) lasts 2.5 s, not 10.5 s.
    stack = Pipeline(redis_server, standin, db=29, LANGSMITH_API_KEY=fresh_key(),
                     LSWH_LANGSMITH_RATE_LIMITS="run_query=15/2s")
    try:
        stack.redis.flushdb()
        runs = api_only_runs(standin, 20)
        standin.fault("POST /api/v2/runs/query", times=4, status=429)
        figures = accounted(stack, stack.post(delivery(runs)), 20, timeout=120)
        assert (figures["written"], figures["failed"]) == (20, 0), figures
        standin.clear_faults()
        pauses = [line for line in stack.workers[0].output().splitlines() if "answered 429" in line]
        assert 1 <= len(pauses) <= 4, pauses  # one line per pause, never one per waiting request
    finally:
        stack.stop()


def test_run_with_only_an_id_cannot_be_located_on_a_v2_only_server(redis_server: RedisServer,
                                                                  standin: StandIn) -> None:
    """The v2 query needs a project and a start time; a server without v1 has no other way."""
    standin.admin("POST", "info", {"profile": "v2-only"})
    stack = Pipeline(redis_server, standin, db=42, LANGSMITH_API_KEY=fresh_key())
    try:
        stack.redis.flushdb()
        bare = {"id": str(uuid.uuid4())}
        located = api_only_runs(standin, 1)[0]
        figures = accounted(stack, stack.post(delivery([bare, located])), 2)
        assert (figures["written"], figures["failed"]) == (1, 1), figures
        [job] = [j for j in stack.failed_jobs() if j.func_name == contract.RUN_JOB]
        result = job.latest_result()
        assert result is not None and f"run {bare['id']}: cannot locate run" in (result.exc_string or "")
    finally:
        standin.admin("POST", "info", {"profile": "cloud"})
        stack.stop()
