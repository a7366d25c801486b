"""`lswh status`: failed jobs grouped by masked reason with the line that requeues each group,
and a delivery's runs accounted for: received = written + updated + unchanged + skipped + failed + pending."""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator

import pytest
import redis

from lswh.status import account_line, group_failed, matching, reason_of
from lswh_core import contract
from tests.support.faults import failed_run_job
from tests.support.procs import RedisServer, lswh, wait_until
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run
from workers.bookkeeping.accounting import Account, record_outcomes, record_received, settle_requeued

KEEP = 3600
NOWHERE = "inputs and outputs: no inline value, no usable presigned URL, and the API did not return the run"


def cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = lswh(*args, env=env, name=f"lswh-{args[0]}")
    code = proc.popen.wait(timeout=60)
    proc.stop()
    return code, proc.output()


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    pipeline = Pipeline(redis_server, standin, db=14)
    pipeline.redis.flushdb()
    yield pipeline
    pipeline.stop()


# --- pure ---------------------------------------------------------------------------------------


def test_reason_is_the_last_line_of_the_exception() -> None:
    assert reason_of("Traceback (most recent call last):\n  File x\nworkers.jobs.RunFailed: run 1: gone\n\n") == \
        "workers.jobs.RunFailed: run 1: gone"
    assert reason_of(None) == "(no reason recorded)"


def test_reasons_differing_only_in_ids_and_numbers_form_one_group() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    reasons = {
        "run-a": f"workers.jobs.RunFailed: run {a}: LangSmith answered 422",
        "run-b": f"workers.jobs.RunFailed: run {b}: LangSmith answered 400",
        "delivery-x": "workers.jobs.DeliveryFailed: delivery 3fa9c0d2e4b5a6978877665544332211: body expired",
    }
    groups = group_failed(reasons)
    assert [(g.reason, sorted(g.job_ids)) for g in groups] == [
        ("workers.jobs.RunFailed: run <uuid>: LangSmith answered <n>", ["run-a", "run-b"]),
        ("workers.jobs.DeliveryFailed: delivery <hex>: body expired", ["delivery-x"]),
    ]
    # The printed --reason is the masked text: it matches its own group and nothing else.
    for group in groups:
        text = shlex.split(group.requeue_command)[-1]
        assert sorted(matching(text, reasons)) == sorted(group.job_ids)
    assert matching("answered 4", reasons) == ["run-a", "run-b"]  # plain text: a substring


def test_account_adds_up_or_says_it_does_not() -> None:
    fine = Account(received=10, written=5, updated=1, unchanged=1, skipped=1, failed=1)
    assert fine.pending == 1
    assert account_line(fine) == ("10 runs received = 5 written + 1 updated + 1 unchanged + 1 skipped + 1 failed "
                           "+ 1 pending")
    broken = Account(received=2, written=3)
    assert broken.pending == -1
    assert account_line(broken).endswith("DOES NOT ADD UP: 1 more outcomes than runs received")


# --- against Redis and the CLI ------------------------------------------------------------------


def test_status_of_a_delivery_shows_where_its_runs_went(stack: Pipeline) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    delivery_id = uuid.uuid4().hex
    record_received(client, delivery_id, 5, keep_seconds=KEEP)
    record_received(client, delivery_id, 99, keep_seconds=KEEP)  # a retried job: received stays 5
    record_outcomes(client, delivery_id, {"written": 2, "skipped": 1, "failed": 1}, keep_seconds=KEEP)
    settle_requeued(client, delivery_id, "updated", keep_seconds=KEEP)  # the failed run, requeued, landed
    assert 0 < client.ttl(contract.accounting_key(delivery_id)) <= KEEP
    with pytest.raises(ValueError):
        record_outcomes(client, delivery_id, {"exploded": 1}, keep_seconds=KEEP)
    with pytest.raises(ValueError):
        settle_requeued(client, delivery_id, "failed", keep_seconds=KEEP)
    code, out = cli("status", delivery_id, env=stack.env)
    assert code == 0, out
    assert (f"delivery {delivery_id}: 5 runs received = 2 written + 1 updated + 0 unchanged + 1 skipped "
            "+ 0 failed + 1 pending") in out


def test_status_of_a_delivery_that_does_not_add_up_says_so_and_exits_1(stack: Pipeline) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    delivery_id = uuid.uuid4().hex
    record_received(client, delivery_id, 1, keep_seconds=KEEP)
    record_outcomes(client, delivery_id, {"written": 1, "failed": 1}, keep_seconds=KEEP)
    code, out = cli("status", delivery_id, env=stack.env)
    assert code == 1
    assert "1 runs received = 1 written" in out and "+ -1 pending  DOES NOT ADD UP" in out


def test_status_of_a_delivery_not_yet_picked_up_shows_all_its_runs_pending(stack: Pipeline) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    body = delivery([fresh_run(), fresh_run()])
    delivery_id = uuid.uuid4().hex
    import json

    client.set(contract.delivery_key(delivery_id), json.dumps(body), ex=KEEP)  # stored, no worker yet
    code, out = cli("status", delivery_id, env=stack.env)
    assert code == 0, out
    assert "2 runs received = 0 written + 0 updated + 0 unchanged + 0 skipped + 0 failed + 2 pending" in out


def test_status_of_an_unknown_or_malformed_delivery_id(stack: Pipeline) -> None:
    assert cli("status", uuid.uuid4().hex, env=stack.env)[0] == 1
    code, out = cli("status", "not-an-id", env=stack.env)
    assert code == 2 and "32 hex digits" in out


def test_failed_run_shows_with_its_reason_and_the_printed_line_requeues_it(
    stack: Pipeline, standin: StandIn
) -> None:
    orphan = fresh_run()  # no inline data, no URL, unknown to the API: fails permanently, at once
    assert stack.post(delivery([orphan])).status_code == 202
    failed_run_job(stack, orphan["id"], timeout=60)

    code, out = cli("status", env=stack.env)
    assert code == 0, out
    assert "queue lswh: " in out and "1 failed" in out
    assert "workers: 1" in out
    group = f"1 x workers.jobs.RunFailed: run <uuid>: {NOWHERE}"
    assert group in out, out
    line = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("lswh requeue --reason"))

    standin.add_runs([{**orphan, "inputs": {"now": "readable"}, "outputs": {"a": 1}}])  # the cause, fixed
    code, out = cli(*shlex.split(line)[1:], env=stack.env)
    assert code == 0, out
    assert "requeued 1 job " in out
    stack.wait_examples([orphan["id"]], timeout=60)
    wait_until(lambda: not stack.failed_jobs(), timeout=30, what="the failed registry to empty")
    code, out = cli("status", env=stack.env)
    assert "failed jobs by reason: 0 in 0 groups" in out


def test_requeue_by_a_reason_nothing_has_exits_1(stack: Pipeline) -> None:
    code, out = cli("requeue", "--reason", "no failure says this", env=stack.env)
    assert code == 1 and "requeued 0 jobs" in out
