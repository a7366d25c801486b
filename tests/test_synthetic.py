"""Synthetic deliveries (backfill, reconciliation) are stored and enqueued like the ingress's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
import redis
from rq.job import Job

from lswh_core import contract
from lswh_core.settings import Settings
from tests.support.procs import RedisServer
from workers.flow import synthetic

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)


@pytest.fixture
def db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis(port=redis_server.port, db=54)
    connection.flushdb()
    yield connection
    connection.flushdb()


def packed(rule_id: str, runs: Sequence[dict[str, Any]], *, source: str, start: dt.datetime, end: dt.datetime,
           created_at: dt.datetime, max_bytes: int | None = None) -> list[bytes]:
    """The raw bodies the worker's packer cuts `runs` into, at most CHUNK_RUNS runs (and
    `max_bytes` bytes) each."""
    packer = synthetic.Packer(rule_id, source=source, start=start, end=end, created_at=created_at,
                              max_bytes=max_bytes)
    out = [closed[0] for closed in map(packer.push, runs) if closed is not None]
    last = packer.finish()
    return out + ([last[0]] if last is not None else [])


def locators(n: int) -> list[dict[str, str]]:
    return [{"id": f"run-{i}", "session_id": "p", "start_time": T0.isoformat()} for i in range(n)]


def test_a_batch_is_cut_into_deliveries_of_at_most_1000_runs() -> None:
    bodies = packed("rule", locators(2_001), source="backfill", start=T0, end=T1, created_at=T1)
    assert [len(orjson.loads(b)["runs"]) for b in bodies] == [1_000, 1_000, 1]
    first = orjson.loads(bodies[0])
    assert (first["rule_id"], first["lswh_source"], first["start_time"]) == ("rule", "backfill", T0.isoformat())


def test_two_batches_of_the_same_runs_are_two_deliveries() -> None:
    once = packed("rule", locators(1), source="reconcile", start=T0, end=T1, created_at=T1)
    later = packed("rule", locators(1), source="reconcile", start=T0, end=T1,
                             created_at=T1 + dt.timedelta(seconds=1))
    assert contract.delivery_id_of(once[0]) != contract.delivery_id_of(later[0])


def test_an_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="lswh_source"):
        packed("rule", locators(1), source="webhook", start=T0, end=T1, created_at=T1)


def test_a_synthetic_delivery_is_stored_and_enqueued_as_the_ingress_does(db: redis.Redis) -> None:
    settings = Settings(retries=3, retry_base_seconds=10, job_timeout=120, keep_days=7, replay_days=2)
    [(delivery_id, runs)] = synthetic.feed(db, settings, "rule", locators(3), source="backfill", start=T0, end=T1)
    assert runs == 3
    assert 0 < db.ttl(contract.delivery_key(delivery_id)) <= settings.replay_seconds
    assert settings.replay_seconds < db.ttl(contract.seen_key(delivery_id)) <= settings.keep_seconds
    job = Job.fetch(contract.delivery_job_id(delivery_id), connection=db)
    assert (job.func_name, job.args) == (contract.DELIVERY_JOB, (delivery_id,))
    assert job.description == contract.delivery_job_description(delivery_id, 3)
    assert (job.timeout, job.retries_left, len(job.retry_intervals or [])) == (120, 3, 3)
    assert job.failure_ttl == settings.failed_keep_seconds and job.result_ttl == contract.FINISHED_JOB_TTL


def with_data(n: int, size: int) -> list[dict[str, object]]:
    return [{**run, "inputs": {"q": "x" * size}, "outputs": {"a": i}} for i, run in enumerate(locators(n))]


def test_runs_read_with_their_data_carry_it_inline_within_the_body_limit() -> None:
    runs = with_data(40, 1_000)
    bodies = packed("rule", runs, source="backfill", start=T0, end=T1, created_at=T1, max_bytes=10_000)
    assert all(len(b) <= 10_000 for b in bodies)
    assert len(bodies) > 4  # cut by size, not by the 1,000-run count
    carried = [run for body in bodies for run in orjson.loads(body)["runs"]]
    assert carried == runs  # every run once, in order, its data inline
    assert sorted({orjson.loads(b)["lswh_chunk"] for b in bodies}) == list(range(len(bodies)))


def test_a_run_too_large_for_any_body_travels_as_its_locator() -> None:
    runs = with_data(3, 100)
    runs[1] = {**runs[1], "inputs": {"q": "y" * 20_000}}
    bodies = packed("rule", runs, source="backfill", start=T0, end=T1, created_at=T1, max_bytes=10_000)
    assert all(len(b) <= 10_000 for b in bodies)
    carried = [run for body in bodies for run in orjson.loads(body)["runs"]]
    assert [r["id"] for r in carried] == ["run-0", "run-1", "run-2"]
    assert "inputs" not in carried[1] and "outputs" not in carried[1]  # the job path reads it through the API
    assert carried[0] == runs[0] and carried[2] == runs[2]


def test_a_feeder_enqueues_each_page_as_its_own_deliveries(db: redis.Redis) -> None:
    settings = Settings(max_body_bytes=50_000)
    feeder = synthetic.Feeder(db, settings, "rule", source="backfill", start=T0, end=T1)
    first = feeder.add(with_data(60, 1_000))
    second = feeder.add(with_data(30, 1_000))
    assert (sum(n for _, n in first), sum(n for _, n in second)) == (60, 30)
    assert len(first) == 2  # 60 KB of data: two bodies of at most 50 KB
    ids = [d for d, _ in feeder.fed]
    assert ids == [d for d, _ in first + second] and len(set(ids)) == len(ids)
    for delivery_id in ids:
        body = db.get(contract.delivery_key(delivery_id))
        assert body is not None and len(body) <= settings.max_body_bytes
    assert len({orjson.loads(db.get(contract.delivery_key(d)) or b"")["lswh_chunk"] for d in ids}) == len(ids)
