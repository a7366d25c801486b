"""Any delivery size, any crash: memory bounded by a slice, progress kept across kills and
timeouts, one bad run never sinks its neighbours. Real processes throughout."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry

from lswh_core import contract
from tests.support.faults import warm_up
from tests.support.procs import RedisServer, wait_until
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run
from workers.flow.slices import SLICE_RUNS

OBJECT_BYTES = 64 * 1024


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def object_runs(standin: StandIn, n: int) -> list[dict[str, Any]]:
    """n runs whose inputs are one 64 KB presigned object each (the same object: the stand-in
    then holds it once, the worker still fetches and holds it once per run)."""
    url = standin.put_object({"q": "padded"}, size_bytes=OBJECT_BYTES, expires_in=3600)
    return [fresh_run(inputs=None, outputs={"a": i},
                      inputs_s3_urls={"ROOT": {"presigned_url": url, "s3_url": "s3://b/k"}}) for i in range(n)]


def delivery_id(response: Any) -> str:
    assert response.status_code == 202, response.text
    return str(response.json()["delivery_id"])


def wait_accounted(stack: Pipeline, delivery: str, runs: int, timeout: float = 120.0) -> dict[str, int]:
    return stack.wait_accounted(delivery, runs, timeout)


def exc_string(job: Job) -> str:
    result = job.latest_result()
    return (result.exc_string or "") if result is not None else ""


def failed_run_jobs(stack: Pipeline) -> list[Job]:
    return [job for job in stack.failed_jobs() if job.func_name == contract.RUN_JOB]


# --- memory ------------------------------------------------------------------------------------


def test_worker_memory_does_not_grow_with_the_delivery(redis_server: RedisServer, standin: StandIn) -> None:
    """Peak RSS of a fresh worker for 2,000 runs stays close to its peak for 200: the worker
    holds a slice, not the delivery (2,000 x 64 KB would be 128 MB of objects at once)."""
    peaks = {}
    for n, db in ((200, 20), (2000, 21)):
        stack = Pipeline(redis_server, standin, db=db)
        try:
            runs = object_runs(standin, n)
            figures = wait_accounted(stack, delivery_id(stack.post(delivery(runs))), n, timeout=180)
            assert figures["written"] == n, figures
            peaks[n] = peak_rss_mb(stack.workers[0].pid)
        finally:
            stack.stop()
    print(f"worker peak RSS: {peaks[200]:.0f} MB at 200 runs, {peaks[2000]:.0f} MB at 2,000 runs")
    assert peaks[2000] < peaks[200] * 1.25 + 16, peaks


# --- progress across kills and timeouts -------------------------------------------------------


def _started(stack: Pipeline, job_id: str) -> bool:
    job = Job.fetch(job_id, connection=stack.redis)
    return job.get_status(refresh=True) == "started"


@pytest.mark.slow  # two abandoned attempts: ~20 s heartbeat TTL + RQ's scheduler lock each
def test_worker_killed_on_every_attempt_ends_with_per_run_failed_jobs(redis_server: RedisServer,
                                                                     standin: StandIn) -> None:
    stack = Pipeline(redis_server, standin, db=22, workers=0, LSWH_RETRIES="1")
    try:
        runs = [fresh_run(inputs={"q": i}, outputs={"a": i}) for i in range(5 * SLICE_RUNS)]
        did = delivery_id(stack.post(delivery(runs)))
        job_id = contract.delivery_job_id(did)
        done_key = contract.done_key(did)
        for attempt in range(2):
            # Slow LangSmith down so the job is caught mid-delivery, after some slices are done.
            standin.admin("POST", "latency", {"ms": 300})
            before = stack.redis.scard(done_key)
            worker = stack.add_worker()
            wait_until(lambda b=before: _started(stack, job_id) and stack.redis.scard(done_key) > b,
                       timeout=180, interval=0.1, what=f"attempt {attempt + 1} to get a slice done")
            worker.signal_group(signal.SIGKILL)
            worker.popen.wait(5)
        standin.admin("POST", "latency", {"ms": 0})
        done_before_last = stack.redis.scard(done_key)
        assert 0 < done_before_last < len(runs)
        stack.add_worker()
        wait_until(lambda: Job.fetch(job_id, connection=stack.redis).get_status(refresh=True) == "finished",
                   timeout=240, interval=0.5, what="the delivery job to finish after its runs were split off")
        failed = failed_run_jobs(stack)
        assert len(failed) == len(runs) - done_before_last
        assert all("the worker was killed on every attempt" in exc_string(job) for job in failed)
        assert not [job for job in stack.failed_jobs() if job.func_name == contract.DELIVERY_JOB]
        written = standin.examples_by_run([r["id"] for r in runs], stack.dataset)
        assert all(len(examples) == 1 for examples in written.values())
        # Every run recorded as done has its example; a write in flight when an attempt was killed
        # may have landed too (the next slice writes while one is recorded), and its run is among
        # those split off: requeued, it finds its example unchanged.
        assert done_before_last <= len(written) <= done_before_last + 2 * SLICE_RUNS
    finally:
        standin.admin("POST", "latency", {"ms": 0})
        stack.stop()


@pytest.mark.slow  # one abandoned attempt: heartbeat TTL + RQ's scheduler lock
def test_killed_job_is_picked_up_once_even_without_retries(redis_server: RedisServer, standin: StandIn) -> None:
    stack = Pipeline(redis_server, standin, db=43, workers=0, LSWH_RETRIES="0")
    try:
        stack.redis.flushdb()
        runs = [fresh_run(inputs={"q": i}, outputs={"a": i}) for i in range(1000)]
        did = delivery_id(stack.post(delivery(runs)))
        job_id, done_key = contract.delivery_job_id(did), contract.done_key(did)
        standin.admin("POST", "latency", {"ms": 300})
        worker = stack.add_worker()
        wait_until(lambda: _started(stack, job_id) and stack.redis.scard(done_key) > 0,
                   timeout=180, interval=0.1, what="a slice to be done")
        worker.signal_group(signal.SIGKILL)
        worker.popen.wait(5)
        standin.admin("POST", "latency", {"ms": 0})
        stack.add_worker()
        figures = wait_accounted(stack, did, len(runs), timeout=240)
        # A write in flight at the kill may have landed (the next slice writes while one is
        # recorded): the retry finds those examples unchanged. Nothing fails, nothing is doubled.
        assert (figures["written"] + figures["unchanged"], figures["failed"]) == (len(runs), 0), figures
        written = standin.examples_by_run([r["id"] for r in runs], stack.dataset)
        assert len(written) == len(runs) and all(len(e) == 1 for e in written.values())
    finally:
        standin.admin("POST", "latency", {"ms": 0})
        stack.stop()


def test_job_out_of_time_resumes_at_the_next_slice(redis_server: RedisServer, standin: StandIn) -> None:
    stack = Pipeline(redis_server, standin, db=23, LSWH_JOB_TIMEOUT="6", LSWH_RETRIES="5")
    try:
        # The worker's first job also looks up /info and creates the dataset (~6 requests in
        # sequence): done before the latency, so every slice of the delivery below costs the same.
        warm_up(stack)
        standin.admin("POST", "latency", {"ms": 1000})  # each slice takes several seconds
        runs = [fresh_run(inputs={"q": i}, outputs={"a": i}) for i in range(3 * SLICE_RUNS)]
        did = delivery_id(stack.post(delivery(runs)))
        figures = wait_accounted(stack, did, len(runs), timeout=240)
        assert figures["written"] == len(runs) and figures["failed"] == 0, figures
        output = stack.workers[0].output()
        assert "stopping before the job timeout" in output
        written = standin.examples_by_run([r["id"] for r in runs], stack.dataset)
        assert len(written) == len(runs) and all(len(e) == 1 for e in written.values())
    finally:
        standin.admin("POST", "latency", {"ms": 0})
        stack.stop()


# --- blast radius of one run ------------------------------------------------------------------


def test_one_malformed_run_id_among_50_fails_alone(redis_server: RedisServer, standin: StandIn) -> None:
    """LangSmith answers 422 to a malformed run id; the ingress accepts any non-empty string."""
    stack = Pipeline(redis_server, standin, db=24)
    try:
        good = [fresh_run() for _ in range(49)]
        standin.add_runs([{**run, "inputs": {"q": run["id"]}, "outputs": {"a": 1}} for run in good])
        bad = fresh_run(id=f"not-a-uuid-{uuid.uuid4().hex[:6]}")
        did = delivery_id(stack.post(delivery([*good[:20], bad, *good[20:]])))
        figures = wait_accounted(stack, did, 50)
        assert (figures["written"], figures["failed"]) == (49, 1), figures
        failed = failed_run_jobs(stack)
        assert [job.args[1] for job in failed] == [bad["id"]]
        assert f"run {bad['id']}:" in exc_string(failed[0])
        assert len(standin.examples_by_run([r["id"] for r in good], stack.dataset)) == 49
    finally:
        stack.stop()


def test_requeued_split_off_run_redoes_only_that_run(redis_server: RedisServer, standin: StandIn) -> None:
    stack = Pipeline(redis_server, standin, db=25)
    try:
        missing = fresh_run()  # the API does not have it: fails visibly, not as null outputs
        present = fresh_run()
        standin.add_runs([{**present, "inputs": {"q": 1}, "outputs": {"a": 1}}])
        did = delivery_id(stack.post(delivery([missing, present])))
        wait_accounted(stack, did, 2)
        [job] = failed_run_jobs(stack)
        assert "the API did not return the run" in exc_string(job)
        standin.add_runs([{**missing, "inputs": {"q": 2}, "outputs": {"a": 2}}])
        FailedJobRegistry(queue=Queue(contract.QUEUE, connection=stack.redis)).requeue(job.id)
        figures = wait_accounted(stack, did, 2)
        wait_until(lambda: (accounting_of(stack, did) or {}).get("failed") == 0, timeout=30, what="requeue")
        assert accounting_of(stack, did)["written"] == 2, figures
        examples = standin.examples_by_run([missing["id"], present["id"]], stack.dataset)
        assert examples[missing["id"]][0]["outputs"] == {"a": 2}
    finally:
        stack.stop()


def accounting_of(stack: Pipeline, did: str) -> dict[str, int]:
    from workers.bookkeeping import accounting

    return accounting.read(stack.redis, did) or {}


def test_run_refused_by_the_api_fails_while_its_neighbours_land(redis_server: RedisServer,
                                                               standin: StandIn) -> None:
    stack = Pipeline(redis_server, standin, db=26)
    try:
        runs = [fresh_run() for _ in range(10)]
        standin.add_runs([{**run, "inputs": {"q": i}, "outputs": None} for i, run in enumerate(runs[1:])])
        did = delivery_id(stack.post(delivery(runs)))
        figures = wait_accounted(stack, did, 10)
        assert (figures["written"], figures["failed"]) == (9, 1), figures
        examples = standin.examples_by_run([r["id"] for r in runs], stack.dataset)
        # LangSmith returned these runs with outputs null: null is what they are.
        assert all(examples[r["id"]][0]["outputs"] in (None, {}) for r in runs[1:])
        assert runs[0]["id"] not in examples
    finally:
        stack.stop()


# --- someone else writes the same example at the same moment ----------------------------------


def examples_by_id(standin: StandIn, stack: Pipeline, runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The examples of these runs, found by their ids (uuid5 of dataset and run): the other
    writer of a race did not set source_run_id."""
    from workers.build.examples import example_id

    [dataset] = [d for d in standin.admin("GET", "datasets") if d["name"] == stack.dataset]
    wanted = {example_id(dataset["id"], r["id"]): r["id"] for r in runs}
    found: dict[str, list[dict[str, Any]]] = {}
    for example in standin.examples(stack.dataset):
        if example["id"] in wanted:
            found.setdefault(wanted[example["id"]], []).append(example)
    return found


def test_bulk_create_refused_whole_for_one_raced_example_costs_nothing(redis_server: RedisServer,
                                                                       standin: StandIn) -> None:
    """Between our listing and our create another writer creates one of the examples: LangSmith
    refuses the whole bulk create with 409. The next round compares again; every run lands once."""
    stack = Pipeline(redis_server, standin, db=40)
    try:
        stack.redis.flushdb()
        runs = [fresh_run(inputs={"q": i}, outputs={"a": i}) for i in range(10)]
        standin.race(times=1, per_list=1)
        figures = wait_accounted(stack, delivery_id(stack.post(delivery(runs))), 10)
        assert not standin.pending_races(), "the race never happened: the test would prove nothing"
        assert figures["failed"] == 0 and figures["written"] + figures["updated"] == 10, figures
        examples = examples_by_id(standin, stack, runs)
        assert {r["id"]: [e["inputs"] for e in examples[r["id"]]] for r in runs} == \
            {r["id"]: [{"q": i}] for i, r in enumerate(runs)}
    finally:
        stack.stop()


def test_conflicts_outlasting_every_round_are_retried_not_failed(redis_server: RedisServer,
                                                                standin: StandIn) -> None:
    from workers.actions.dataset_writer import MAX_CONFLICT_ROUNDS

    stack = Pipeline(redis_server, standin, db=41)
    try:
        stack.redis.flushdb()
        runs = [fresh_run(inputs={"q": i}, outputs={"a": i}) for i in range(4)]
        # Every round of the first attempt loses a race: "kept conflicting" is transient.
        standin.race(times=MAX_CONFLICT_ROUNDS, per_list=1)
        response = stack.post(delivery(runs))
        figures = wait_accounted(stack, delivery_id(response), 4, timeout=60)
        assert figures["failed"] == 0, figures
        job = Job.fetch(contract.delivery_job_id(response.json()["delivery_id"]), connection=stack.redis)
        assert job.retries_left is not None and job.retries_left < int(stack.env.get("LSWH_RETRIES", "5"))
        examples = examples_by_id(standin, stack, runs)
        assert all(len(examples[r["id"]]) == 1 and examples[r["id"]][0]["inputs"] == {"q": i}
                   for i, r in enumerate(runs))
    finally:
        stack.stop()
