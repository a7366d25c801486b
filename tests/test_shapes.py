"""No authenticated delivery is refused for its shape (issue 16): a JSON object without `runs` is
stored and acknowledged like any delivery; what the worker cannot process fails visibly as its own
job and can be replayed once the pipeline knows the shape. Bodies that are not objects, and the
malformed cases SPEC lists, are still 400."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

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
