"""`lswh replay`: stored deliveries processed again, all their runs, whatever was done before."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import httpx
import pytest
from rq import Worker
from rq.job import Job, JobStatus

from lswh_core import contract
from tests.support.commands import run_lswh
from tests.support.faults import wait_for
from tests.support.procs import RedisServer
from tests.support.stack import Pipeline, StandIn, delivery, fresh_key, fresh_run
from workers.bookkeeping import accounting


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    pipeline = Pipeline(redis_server, standin, db=52, LANGSMITH_API_KEY=fresh_key())
    yield pipeline
    pipeline.stop()


def wait_job(pipeline: Pipeline, job_id: str) -> Job:
    def finished() -> Job | None:
        job = Job.fetch(job_id, connection=pipeline.redis)
        return job if job.get_status() == JobStatus.FINISHED else None

    return wait_for(finished, 60, f"job {job_id} did not finish")  # type: ignore[no-any-return]


def test_replay_after_presigned_urls_expired_reads_the_run_through_the_api(stack: Pipeline,
                                                                           standin: StandIn) -> None:
    project = str(uuid.uuid4())
    # A worker is up: the URL's life below is for processing, not for start-up.
    wait_for(lambda: Worker.count(connection=stack.redis) > 0, 30, "no worker registered")
    # Long enough for a loaded machine to process the delivery with it, short enough to wait out.
    url = standin.put_object({"q": "from s3"}, expires_in=8)
    run = fresh_run(session_id=project, start_time=dt.datetime.now(dt.UTC).isoformat(), outputs={"a": "1"},
                    inputs_s3_urls={"ROOT": {"presigned_url": url, "s3_url": "s3://bucket/key"}})
    standin.add_runs([{**run, "inputs": {"q": "from api"}}])
    answer = stack.post(delivery([run]))
    assert answer.status_code == 202
    delivery_id = answer.json()["delivery_id"]
    assert stack.wait_examples([run["id"]])[run["id"]][0]["inputs"] == {"q": "from s3"}
    wait_for(lambda: httpx.get(url, timeout=5).status_code == 403, 30, "the presigned URL did not expire")

    result = run_lswh(stack.env, "replay", delivery_id)
    assert result.returncode == 0, result.stderr
    assert f"{delivery_id}: 1 runs, job {contract.replay_job_id(delivery_id, 1)}" in result.stdout
    wait_job(stack, contract.replay_job_id(delivery_id, 1))
    [example] = stack.standin.examples_by_run([run["id"]], stack.dataset)[run["id"]]
    assert example["inputs"] == {"q": "from api"}  # the expired URL was not reused
    figures = accounting.read(stack.redis, delivery_id)
    assert figures is not None and (figures["received"], figures["updated"], figures["pending"]) == (1, 1, 0)


def test_replay_by_rule_processes_that_rules_recent_deliveries_again(stack: Pipeline) -> None:
    rule_a, rule_b = str(uuid.uuid4()), str(uuid.uuid4())
    runs = [fresh_run(inputs={"q": str(i)}, outputs={"a": str(i)}) for i in range(3)]
    ids = []
    for run, rule_id in zip(runs, (rule_a, rule_a, rule_b), strict=True):
        answer = stack.post(delivery([run], rule_id=rule_id))
        assert answer.status_code == 202
        ids.append(answer.json()["delivery_id"])
    stack.wait_examples([r["id"] for r in runs])
    stack.wait_idle()

    result = run_lswh(stack.env, "replay", "--rule", rule_a, "--since", "1h")
    assert result.returncode == 0, result.stderr
    assert "replayed 2 deliveries" in result.stdout
    for delivery_id in ids[:2]:
        wait_job(stack, contract.replay_job_id(delivery_id, 1))
        figures = accounting.read(stack.redis, delivery_id)
        assert figures is not None and (figures["received"], figures["unchanged"]) == (1, 1)
    assert not Job.exists(contract.replay_job_id(ids[2], 1), connection=stack.redis)

    again = run_lswh(stack.env, "replay", ids[0])
    assert again.returncode == 0 and contract.replay_job_id(ids[0], 2) in again.stdout
    assert [len(v) for v in stack.standin.examples_by_run([r["id"] for r in runs], stack.dataset).values()] == [1] * 3


def test_replay_of_a_delivery_whose_body_is_gone_says_so(stack: Pipeline) -> None:
    gone = uuid.uuid4().hex
    result = run_lswh(stack.env, "replay", gone)
    assert result.returncode == 1
    assert f"{gone}: not replayed: its raw body is gone" in result.stdout


def test_replay_refuses_what_is_not_a_delivery_id(stack: Pipeline) -> None:
    result = run_lswh(stack.env, "replay", "not-an-id")
    assert result.returncode == 2 and "32 hex digits" in result.stderr


def test_every_key_replay_writes_expires(stack: Pipeline) -> None:
    """Runs after the tests above."""
    from tests.support.faults import keys_without_ttl

    assert stack.redis.keys("lswh:replays:*")
    assert keys_without_ttl(stack.redis) == []
