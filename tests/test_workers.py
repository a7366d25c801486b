"""Workers against the stand-in: hydration, the feedback join, outputs modes, idempotency, failures."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator

import pytest
from rq import Queue
from rq.registry import FailedJobRegistry

from tests.support.procs import RedisServer, wait_until
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run

T0 = dt.datetime(2024, 4, 5, 1, 0, tzinfo=dt.UTC)


def at(minutes: int) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat()


def s3_run(standin: StandIn, inputs: dict, outputs: dict | None, **options: object) -> dict:
    run = fresh_run()
    run["inputs_s3_urls"] = {"ROOT": {"presigned_url": standin.put_object(inputs, **options), "s3_url": "s3://b/k"}}
    if outputs is not None:
        run["outputs_s3_urls"] = {"ROOT": {"presigned_url": standin.put_object(outputs), "s3_url": "s3://b/o"}}
    return run


def api_run(standin: StandIn, inputs: dict, outputs: dict | None) -> dict:
    run = fresh_run()
    standin.add_runs([{**run, "inputs": inputs,
                       "outputs": outputs}])
    return run


# --- hydration -------------------------------------------------------------------------------


def test_inputs_and_outputs_come_from_presigned_urls(pipeline: Pipeline, standin: StandIn) -> None:
    run = s3_run(standin, {"q": "from s3"}, {"a": "also s3"})
    pipeline.post(delivery([run]))
    example = pipeline.wait_examples([run["id"]])[run["id"]][0]
    assert (example["inputs"], example["outputs"]) == ({"q": "from s3"}, {"a": "also s3"})


def test_expired_presigned_url_falls_back_to_the_api(pipeline: Pipeline, standin: StandIn) -> None:
    run = s3_run(standin, {"q": "stale"}, None, expires_in=-60)
    standin.add_runs([{**run, "inputs": {"q": "from api"}, "outputs": {"a": "api"}}])
    pipeline.post(delivery([run]))
    example = pipeline.wait_examples([run["id"]])[run["id"]][0]
    assert (example["inputs"], example["outputs"]) == ({"q": "from api"}, {"a": "api"})


def test_presigned_url_on_a_host_not_allowed_is_not_fetched(pipeline: Pipeline, standin: StandIn) -> None:
    run = fresh_run()
    # same server, but named by a host that is not in LSWH_S3_ALLOWED_HOSTS
    url = standin.put_object({"q": "never"}).replace("127.0.0.1", "localhost")
    run["inputs_s3_urls"] = {"ROOT": {"presigned_url": url}}
    standin.add_runs([{**run, "inputs": {"q": "api"}}])
    before = standin.stats()["requests"].get("GET /s3/{bucket}/{key}", 0)
    pipeline.post(delivery([run]))
    assert pipeline.wait_examples([run["id"]])[run["id"]][0]["inputs"] == {"q": "api"}
    assert standin.stats()["requests"].get("GET /s3/{bucket}/{key}", 0) == before


def test_run_with_no_outputs_anywhere_still_becomes_an_example(pipeline: Pipeline, standin: StandIn) -> None:
    run = api_run(standin, {"q": 1}, None)
    pipeline.post(delivery([run]))
    assert pipeline.wait_examples([run["id"]])[run["id"]][0]["outputs"] in (None, {})


# --- feedback join ---------------------------------------------------------------------------


def test_feedback_is_joined_by_run_id_whatever_the_order(pipeline: Pipeline, standin: StandIn) -> None:
    runs = [fresh_run(inputs={"i": i}, outputs={"o": i}) for i in range(6)]
    feedback = [
        {"run_id": runs[0]["id"], "key": "correctness", "score": 0, "correction": "fixed zero", "modified_at": at(1)},
        {"run_id": runs[2]["id"], "key": "correctness", "score": 1, "correction": {"o": "dict"}, "modified_at": at(1)},
        {"run_id": runs[2]["id"], "key": "helpful", "score": 0.5, "modified_at": at(2)},
        # several corrections: the latest modified_at wins, whatever their order
        {"run_id": runs[3]["id"], "key": "correctness", "correction": "newest", "modified_at": at(9)},
        {"run_id": runs[3]["id"], "key": "correctness", "correction": "older", "modified_at": at(3)},
        # feedback without a correction: outputs stay the run's
        {"run_id": runs[4]["id"], "key": "correctness", "score": 1, "modified_at": at(1)},
    ]
    random.Random(7).shuffle(feedback)
    standin.add_feedback(feedback)
    random.Random(3).shuffle(runs)
    pipeline.post(delivery(runs))
    by_input = {e[0]["inputs"]["i"]: e[0] for e in pipeline.wait_examples([r["id"] for r in runs]).values()}
    assert by_input[0]["outputs"] == {"output": "fixed zero"}
    assert by_input[1]["outputs"] == {"o": 1}  # no feedback at all
    assert by_input[2]["outputs"] == {"o": "dict"}
    assert by_input[2]["metadata"]["feedback"] == {"correctness": 1, "helpful": 0.5}
    assert by_input[3]["outputs"] == {"output": "newest"}
    assert by_input[4]["outputs"] == {"o": 4}
    assert by_input[5]["metadata"]["feedback"] == {}


# --- idempotency -----------------------------------------------------------------------------


def test_redelivered_and_reposted_runs_make_one_example_each(pipeline: Pipeline, standin: StandIn) -> None:
    runs = [fresh_run(inputs={"i": i}, outputs={}) for i in range(3)]
    first = delivery(runs)
    pipeline.post(first)
    pipeline.wait_examples([r["id"] for r in runs])
    # same runs in a different delivery (new body, so not a duplicate at the ingress)
    second = delivery(runs, end_time="2024-04-05T02:00:00+00:00")
    assert pipeline.post(second).json()["duplicate"] is False
    pipeline.post(first)
    pipeline.wait_idle()
    found = standin.examples_by_run([r["id"] for r in runs], pipeline.dataset)
    assert {rid: len(examples) for rid, examples in found.items()} == {r["id"]: 1 for r in runs}


def test_existing_example_conflict_in_bulk_costs_nothing(pipeline: Pipeline, standin: StandIn) -> None:
    """One run already has its example (written by an earlier delivery): the bulk create of
    the next delivery meets a 409 for it, and every other run still lands."""
    known = fresh_run(inputs={"i": "known"}, outputs={})
    pipeline.post(delivery([known]))
    pipeline.wait_examples([known["id"]])
    runs = [known, *(fresh_run(inputs={"i": i}, outputs={}) for i in range(5))]
    pipeline.post(delivery(runs))
    found = pipeline.wait_examples([r["id"] for r in runs])
    assert all(len(examples) == 1 for examples in found.values())


def test_newer_correction_updates_the_example(pipeline: Pipeline, standin: StandIn) -> None:
    run = fresh_run(inputs={"q": 1}, outputs={"a": "model"})
    pipeline.post(delivery([run]))
    assert pipeline.wait_examples([run["id"]])[run["id"]][0]["outputs"] == {"a": "model"}
    standin.add_feedback([{"run_id": run["id"], "key": "correctness", "correction": "human", "modified_at": at(5)}])
    pipeline.post(delivery([run], end_time="2024-04-06T00:00:00+00:00"))

    def updated() -> bool:
        examples = standin.examples_by_run([run["id"]], pipeline.dataset)[run["id"]]
        return len(examples) == 1 and examples[0]["outputs"] == {"output": "human"}

    wait_until(updated, timeout=30, what="the example to take the correction")


# --- failures --------------------------------------------------------------------------------


def test_transient_fault_on_example_writes_recovers(pipeline: Pipeline, standin: StandIn) -> None:
    pipeline.wait_idle()
    # more 503s than the SDK's own bounded retries (3 attempts): the job retries through RQ
    standin.fault("POST /v1/platform/datasets", times=4, status=503)
    runs = [fresh_run(inputs={"i": i}, outputs={}) for i in range(3)]
    pipeline.post(delivery(runs))
    found = pipeline.wait_examples([r["id"] for r in runs], timeout=60)
    assert all(len(examples) == 1 for examples in found.values())
    standin.clear_faults()


def test_one_permanent_failure_among_ten_is_split_off(pipeline: Pipeline, standin: StandIn) -> None:
    good = [fresh_run(inputs={"i": i}, outputs={}) for i in range(9)]
    bad = fresh_run()  # no inline inputs, no URL, and the API does not know it: permanent
    pipeline.post(delivery([*good[:4], bad, *good[4:]]))
    found = pipeline.wait_examples([r["id"] for r in good])
    assert len(found) == 9
    pipeline.wait_idle()
    failed = [job for job in pipeline.failed_jobs() if bad["id"] in job.id]
    assert len(failed) == 1
    job = failed[0]
    assert bad["id"] in job.description
    assert job.latest_result().exc_string.strip().endswith(  # type: ignore[union-attr]
        f"run {bad['id']}: inputs and outputs: no inline value, no usable presigned URL, and the API did not "
        "return the run")
    # no delivery job failed because of it
    assert not [j for j in pipeline.failed_jobs() if j.id.startswith("delivery-")]


def test_requeued_failed_run_redoes_only_that_run(pipeline: Pipeline, standin: StandIn) -> None:
    good = fresh_run(inputs={"i": "good"}, outputs={})
    bad = fresh_run()
    pipeline.post(delivery([good, bad]))
    pipeline.wait_examples([good["id"]])
    pipeline.wait_idle()
    job = next(j for j in pipeline.failed_jobs() if bad["id"] in j.id)
    # the operator fixes the cause (the run becomes readable) and requeues the failed job
    standin.add_runs([{**bad, "inputs": {"i": "fixed"}, "outputs": {"o": 1}}])
    FailedJobRegistry(queue=Queue("lswh", connection=pipeline.redis)).requeue(job.id)
    example = pipeline.wait_examples([bad["id"]])[bad["id"]]
    assert example[0]["inputs"] == {"i": "fixed"}
    pipeline.wait_idle()
    assert len(standin.examples_by_run([good["id"]], pipeline.dataset)[good["id"]]) == 1


# --- LSWH_OUTPUTS modes ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["correction", "run"])
def mode_pipeline(request: pytest.FixtureRequest, redis_server: RedisServer,
                  standin: StandIn) -> Iterator[Pipeline]:
    db = {"correction": 1, "run": 2}[request.param]
    redis_server_db = Pipeline(redis_server, standin, db=db, LSWH_OUTPUTS=request.param)
    yield redis_server_db
    redis_server_db.stop()


def test_outputs_mode(mode_pipeline: Pipeline, standin: StandIn) -> None:
    corrected = fresh_run(inputs={"i": "c"}, outputs={"o": "model"})
    plain = fresh_run(inputs={"i": "p"}, outputs={"o": "model"})
    standin.add_feedback([{"run_id": corrected["id"], "key": "k", "correction": "human", "id": str(uuid.uuid4())}])
    mode_pipeline.post(delivery([corrected, plain]))
    mode = mode_pipeline.env["LSWH_OUTPUTS"]
    if mode == "correction":
        found = mode_pipeline.wait_examples([corrected["id"]])
        assert found[corrected["id"]][0]["outputs"] == {"output": "human"}
        mode_pipeline.wait_idle()
        assert plain["id"] not in standin.examples_by_run([plain["id"]], mode_pipeline.dataset)
    else:
        found = mode_pipeline.wait_examples([corrected["id"], plain["id"]])
        assert found[corrected["id"]][0]["outputs"] == {"o": "model"}
        assert found[plain["id"]][0]["outputs"] == {"o": "model"}


# --- LSWH_RULE_DATASETS ----------------------------------------------------------------------


def test_rule_routes_its_runs_to_its_own_dataset(redis_server: RedisServer, standin: StandIn) -> None:
    routed = f"routed-{uuid.uuid4().hex[:8]}"
    rule = str(uuid.uuid4())
    stack = Pipeline(redis_server, standin, db=4, LSWH_RULE_DATASETS=f"other-rule=elsewhere,{rule}={routed}")
    try:
        mine = fresh_run(inputs={"i": "routed"}, outputs={})
        default = fresh_run(inputs={"i": "default"}, outputs={})
        stack.post(delivery([mine], rule_id=rule))
        stack.post(delivery([default]))
        assert stack.wait_examples([default["id"]])  # the default dataset (LSWH_DATASET)
        wait_until(lambda: standin.examples_by_run([mine["id"]], routed), what="the routed example")
        assert mine["id"] not in standin.examples_by_run([mine["id"]], stack.dataset)
        assert standin.examples_by_run([mine["id"]], routed)[mine["id"]][0]["metadata"]["rule_id"] == rule
    finally:
        stack.stop()


def test_deleted_dataset_is_created_again(redis_server: RedisServer) -> None:
    """A worker caches the dataset id; if someone deletes the dataset, the next writes meet a
    404 and the retry recreates it rather than failing every run for good."""
    own = StandIn()  # its own stand-in: the reset below must not touch other tests' data
    stack = Pipeline(redis_server, own, db=4)
    try:
        first = fresh_run(inputs={"i": 1}, outputs={})
        stack.post(delivery([first]))
        stack.wait_examples([first["id"]])
        own.admin("POST", "reset")  # datasets and examples gone
        second = fresh_run(inputs={"i": 2}, outputs={})
        stack.post(delivery([second]))
        assert stack.wait_examples([second["id"]], timeout=30)[second["id"]][0]["inputs"] == {"i": 2}
        stack.wait_idle()
        assert not stack.failed_jobs()
    finally:
        stack.stop()
        own.stop()


def test_empty_inline_inputs_are_used_not_looked_up(pipeline: Pipeline, standin: StandIn) -> None:
    """Non-null wins: {} is a run's real (empty) inputs, not a reason to ask the API."""
    run = fresh_run(inputs={}, outputs={})
    standin.add_runs([{**run, "inputs": {"from": "api"}, "outputs": {"from": "api"}}])
    pipeline.post(delivery([run]))
    example = pipeline.wait_examples([run["id"]])[run["id"]][0]
    assert example["inputs"] == {}
    assert example["outputs"] in ({}, None)
