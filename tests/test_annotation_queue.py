"""The annotation-queue action against the servers users run (issue 16): a webhook time without a
timezone reaches the queue as UTC, and a server older than 0.16.14 (no items endpoint) fails the
run with a reason that says so, in one request, not a "not found" per halved batch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faults import failed_run_job
from tests.support.procs import RedisServer, wait_until
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run
from workers.actions.annotation_queue import queue_item
from workers.langsmith.door import queue_items_missing

DB = 47  # this module's Redis database (see `grep -rn "db=" tests`)
RULE = str(uuid.uuid4())
ITEMS = "POST /v1/platform/annotation-queues/{queue_id}/items"
NAIVE = "2024-04-05T01:28:54.085646"  # the docs' webhook example payload: no timezone


# --- pure ---------------------------------------------------------------------------------------


def test_a_naive_start_time_is_sent_as_utc() -> None:
    item = queue_item({"id": "r", "session_id": "p", "start_time": NAIVE})
    assert item == {"item_type": "RUN", "run_id": "r", "project_id": "p", "start_time": f"{NAIVE}+00:00"}


def test_a_start_time_with_an_offset_keeps_it_and_one_that_is_no_time_goes_as_given() -> None:
    offset = "2024-04-05T03:28:54+02:00"
    assert queue_item({"id": "r", "start_time": offset})["start_time"] == offset
    assert queue_item({"id": "r", "start_time": "soon"})["start_time"] == "soon"  # LangSmith's 422 names it


@pytest.mark.parametrize("version", ["0.16.9", "0.15.0", "0.16.13"])
def test_a_404_below_0_16_14_names_the_version_the_items_endpoint_landed_in(version: str) -> None:
    reason = queue_items_missing(version)
    assert f"LangSmith {version} has no annotation-queue items endpoint" in reason and "0.16.14" in reason


@pytest.mark.parametrize("version", ["", None, "dev-build"])
def test_a_404_on_a_server_of_unknown_version_names_both_causes(version: str | None) -> None:
    reason = queue_items_missing(version)
    assert "the queue is gone" in reason and "older than 0.16.14" in reason


def test_a_404_on_a_current_server_is_a_missing_queue() -> None:
    assert queue_items_missing("0.18.0") == "annotation queue not found in LangSmith (its items endpoint answered 404)"


# --- end to end ---------------------------------------------------------------------------------


def rules_file(tmp_path: Path, queue_id: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(f'''
[rules."{RULE}"]
dataset = "queue-{RULE[:8]}"

[[rules."{RULE}".actions]]
type = "annotation_queue"
queue_id = "{queue_id}"
''')
    return path


@pytest.fixture
def server(own_standin: StandIn) -> Iterator[StandIn]:
    own_standin.admin("POST", "reset")
    yield own_standin
    own_standin.admin("POST", "reset")


def items_requests(standin: StandIn) -> int:
    return int(standin.stats()["requests"].get(ITEMS, 0))


def test_a_naive_webhook_time_reaches_the_queue_with_an_offset(redis_server: RedisServer, server: StandIn,
                                                               tmp_path: Path) -> None:
    queue_id = server.add_queue(f"review-{uuid.uuid4().hex[:8]}")
    stack = Pipeline(redis_server, server, db=DB, LSWH_RULES_FILE=str(rules_file(tmp_path, queue_id)))
    try:
        run = fresh_run(inputs={"q": 1}, outputs={"a": 1}, start_time=NAIVE)
        answer = stack.post(delivery([run], rule_id=RULE))
        assert answer.status_code == 202, answer.text
        figures = stack.wait_accounted(answer.json()["delivery_id"], 1, timeout=60)
        assert (figures["written"], figures["failed"]) == (1, 0), figures
        [item] = server.queue_items(queue_id)
        # The stand-in refuses a start_time without an offset (the schema's date-time), as a strict server would.
        assert (item["run_id"], item["start_time"]) == (run["id"], f"{NAIVE}+00:00")
    finally:
        stack.stop()


def test_a_server_older_than_0_16_14_fails_the_run_naming_0_16_14(redis_server: RedisServer, server: StandIn,
                                                                  tmp_path: Path) -> None:
    queue_id = server.add_queue(f"review-{uuid.uuid4().hex[:8]}")
    server.use_flags("v2-only-old")  # SmithDB only at 0.16.9: the queue exists, its items endpoint does not
    stack = Pipeline(redis_server, server, db=DB + 1, LSWH_RULES_FILE=str(rules_file(tmp_path, queue_id)))
    try:
        runs = [fresh_run(inputs={"q": i}, outputs={"a": i}) for i in range(4)]
        answer = stack.post(delivery(runs, rule_id=RULE))
        assert answer.status_code == 202, answer.text
        figures = stack.wait_accounted(answer.json()["delivery_id"], 4, timeout=60)
        assert (figures["written"], figures["failed"]) == (0, 4), figures
        job = failed_run_job(stack, runs[0]["id"])
        reason = job.latest_result().exc_string.strip().splitlines()[-1]
        assert "LangSmith 0.16.9 has no annotation-queue items endpoint: it landed in backend 0.16.14" in reason
        # One request for the four runs: a missing endpoint is no item's fault, so the batch is not halved.
        wait_until(lambda: len(stack.failed_jobs()) == 4, timeout=30, what="the four failed runs")
        assert items_requests(server) == 1
        assert server.queue_items(queue_id) == []
    finally:
        stack.stop()
