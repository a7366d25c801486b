"""No authenticated delivery is refused for its shape (issue 16): a JSON object without `runs` is
stored and acknowledged like any delivery; what the worker cannot process fails visibly as its own
job and can be replayed once the pipeline knows the shape. Bodies that are not objects, and the
malformed cases docs/langsmith.md lists ("Thread rules and other delivery shapes"), are
still 400."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ingress.payload import parse_delivery, threads_in
from lswh_core.contract import delivery_id_of
from tests.support.procs import RedisServer
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    """Its own: the deliveries here fail on purpose, and the shared pipeline's tests count failed jobs."""
    stack = Pipeline(redis_server, standin, db=61)
    yield stack
    stack.stop()


def test_an_object_without_runs_parses_as_a_delivery() -> None:
    doc = parse_delivery(b'{"rule_id": "r", "threads": [{"thread_id": "t"}]}')
    assert threads_in(doc) == 1
    assert threads_in(parse_delivery(b'{"rule_id": "r", "something": 1}')) is None
    assert threads_in(parse_delivery(b'{"threads": "not a list"}')) is None


def test_a_thread_delivery_is_202_with_its_thread_count_and_kept_as_long_as_a_failed_job(
        pipeline: Pipeline) -> None:
    body = json.dumps({"rule_id": str(uuid.uuid4()), "start_time": "2026-08-01T00:00:00Z",
                       "end_time": "2026-08-01T00:05:00Z",
                       "threads": [{"thread_id": str(uuid.uuid4())}, {"thread_id": str(uuid.uuid4())}]}).encode()
    response = pipeline.post(None, raw=body)
    assert response.status_code == 202
    assert response.json() == {"delivery_id": delivery_id_of(body), "runs": 0, "duplicate": False, "threads": 2}
    key = f"lswh:delivery:{delivery_id_of(body)}"
    assert pipeline.redis.get(key) == body
    # LSWH_FAILED_KEEP_DAYS (30 d) outlasts LSWH_REPLAY_DAYS (2 d): the body stays for a replay.
    assert pipeline.redis.ttl(key) > 29 * 86_400


def test_a_delivery_with_runs_keeps_its_body_for_the_replay_days_only(pipeline: Pipeline) -> None:
    body = json.dumps(delivery([fresh_run()])).encode()
    assert pipeline.post(None, raw=body).status_code == 202
    assert pipeline.redis.ttl(f"lswh:delivery:{delivery_id_of(body)}") <= 2 * 86_400


def test_an_unknown_shape_is_202_without_a_thread_count(pipeline: Pipeline) -> None:
    body = json.dumps({"rule_id": str(uuid.uuid4()), "items": [{"x": 1}]}).encode()
    response = pipeline.post(None, raw=body)
    assert response.status_code == 202
    assert response.json() == {"delivery_id": delivery_id_of(body), "runs": 0, "duplicate": False}


@pytest.mark.parametrize("raw", [b"[]", b'"runs"', b"1", b"null", b'[{"runs": []}]', b'{"runs": null}',
                                 b'{"runs": {}}', b'{"runs": [{"id": ""}]}', b'{"rule_id": 5, "threads": []}'])
def test_bodies_that_are_not_objects_or_are_malformed_are_still_400(pipeline: Pipeline, raw: bytes) -> None:
    response = pipeline.post(None, raw=raw)
    assert response.status_code == 400
    assert pipeline.redis.get(f"lswh:delivery:{delivery_id_of(raw)}") is None


def test_an_object_without_runs_still_needs_the_secret(pipeline: Pipeline) -> None:
    response = pipeline.post({"threads": []}, secret="wrong")
    assert response.status_code == 401


# --- what the worker does with them --------------------------------------------------------------


def failed_delivery(pipeline: Pipeline, delivery_id: str, timeout: float = 30) -> Any:
    from tests.support.procs import wait_until

    found: list[Any] = []

    def failed() -> bool:
        found[:] = [job for job in pipeline.failed_jobs() if delivery_id in job.id]
        return bool(found)

    wait_until(failed, timeout=timeout, what=f"delivery {delivery_id} in the failed registry")
    return found[0]


def test_an_unknown_shape_fails_at_once_as_its_own_job_naming_its_keys(pipeline: Pipeline) -> None:
    rule_id = str(uuid.uuid4())
    body = {"rule_id": rule_id, "kind": "digest", "items": [{"secret_value": "never logged"}]}
    delivery_id = pipeline.post(body).json()["delivery_id"]
    job = failed_delivery(pipeline, delivery_id)
    text = job.latest_result().exc_string.strip()
    assert text.endswith(f"delivery {delivery_id}: unrecognised delivery shape (top-level keys: items, kind, rule_id)"
                         f"; its rule's group_by could not be read: no rule {rule_id} in this LangSmith workspace")
    assert "never logged" not in text
    assert len(job.results()) == 1  # no retries: the same body fails the same way


def test_malformed_threads_are_202_and_a_visible_failure(pipeline: Pipeline, standin: StandIn) -> None:
    [rule_id] = standin.add_rules([{"project_id": str(uuid.uuid4()), "group_by": "THREAD_ID"}])
    answer = pipeline.post({"rule_id": rule_id, "threads": "t-1"})
    assert answer.status_code == 202 and "threads" not in answer.json()
    job = failed_delivery(pipeline, answer.json()["delivery_id"])
    assert "malformed threads: a str, not a list" in job.latest_result().exc_string


def test_an_unrecognised_delivery_is_grouped_by_status_and_replayed_after_the_fix(
        pipeline: Pipeline, standin: StandIn) -> None:
    from tests.support.commands import run_lswh
    from tests.support.procs import wait_until

    project = str(uuid.uuid4())
    [rule_id] = standin.add_rules([{"project_id": project}])  # not a thread rule (yet)
    thread_id = f"t-{uuid.uuid4()}"
    run_id = str(uuid.uuid4())
    standin.add_runs([{"id": run_id, "session_id": project, "inputs": {"q": "hello"}, "outputs": {"a": "hi"},
                       "extra": {"metadata": {"thread_id": thread_id}}}])
    body = {"rule_id": rule_id, "start_time": "2026-08-01T00:00:00Z", "end_time": "2026-08-01T00:05:00Z",
            "threads": [{"thread_id": thread_id}]}
    delivery_id = pipeline.post(body).json()["delivery_id"]
    job = failed_delivery(pipeline, delivery_id)
    assert "unrecognised delivery shape (top-level keys: end_time, rule_id, start_time, threads)" in \
        job.latest_result().exc_string
    status = run_lswh(pipeline.env, "status")
    assert "unrecognised delivery shape" in status.stdout, status.stdout

    # The fix: LangSmith now says the rule groups by thread (an upgrade that knows a shape is alike).
    standin.add_rules([{"id": rule_id, "project_id": project, "group_by": "THREAD_ID"}])
    replayed = run_lswh(pipeline.env, "replay", delivery_id)
    assert replayed.returncode == 0, replayed.stderr

    def written() -> bool:
        return any((e.get("metadata") or {}).get("thread_id") == thread_id for e in standin.examples(pipeline.dataset))

    wait_until(written, timeout=60, what="the replayed thread's example")


def test_on_a_v1_only_server_a_thread_delivery_fails_saying_the_rule_cannot_be_read(redis_server: RedisServer) -> None:
    old = StandIn(flags="v1-only")
    stack = Pipeline(redis_server, old, db=62)
    try:
        rule_id = str(uuid.uuid4())
        delivery_id = stack.post({"rule_id": rule_id, "threads": [{"thread_id": "t"}]}).json()["delivery_id"]
        text = failed_delivery(stack, delivery_id).latest_result().exc_string
        assert f"its rule's group_by could not be read: reading rule {rule_id} (GET /api/v2/runs/rules): not found" \
            in text
        # Its runs deliveries are processed as before: a rule that cannot be read is a runs rule.
        run = fresh_run(inputs={"q": 1}, outputs={"a": 1})
        stack.post(delivery([run], rule_id=rule_id))
        stack.wait_examples([run["id"]])
    finally:
        stack.stop()
        old.stop()
