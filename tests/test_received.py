"""The "received" index the job path writes: what reconciliation compares with, what replay finds."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from lswh_core import contract
from tests.support.procs import RedisServer
from workers.bookkeeping import received

KEEP = 3_600


@pytest.fixture
def db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis(port=redis_server.port, db=53)
    connection.flushdb()
    yield connection
    connection.flushdb()


def test_every_run_of_a_delivery_is_received_for_its_rule(db: redis.Redis) -> None:
    received.record(db, "rule-a", [{"id": "r1"}, {"id": "r2"}], "d1", KEEP)
    assert received.not_received(db, "rule-a", ["r1", "r2", "r3"]) == ["r3"]
    assert received.not_received(db, "rule-b", ["r1"]) == ["r1"]  # per rule
    assert received.rules_seen(db) == {"rule-a"}
    assert received.deliveries_since(db, "rule-a", time.time() - 60) == ["d1"]


def test_a_delivery_without_a_rule_records_nothing(db: redis.Redis) -> None:
    received.record(db, None, [{"id": "r1"}], "d1", KEEP)
    assert db.dbsize() == 0


def test_members_older_than_keep_days_are_trimmed_and_keys_expire(db: redis.Redis) -> None:
    db.zadd(contract.rule_runs_key("rule-a"), {"old": time.time() - KEEP - 10})
    db.zadd(contract.rule_deliveries_key("rule-a"), {"old-delivery": time.time() - KEEP - 10})
    received.record(db, "rule-a", [{"id": "new"}], "d2", KEEP)
    assert received.not_received(db, "rule-a", ["old", "new"]) == ["old"]
    assert received.deliveries_since(db, "rule-a", 0) == ["d2"]
    for key in (contract.rule_runs_key("rule-a"), contract.rule_deliveries_key("rule-a"), contract.RULES_SEEN_KEY):
        assert 0 < db.ttl(key) <= KEEP


def test_a_large_delivery_is_recorded_whole(db: redis.Redis) -> None:
    ids = [f"r{i}" for i in range(received.CHUNK * 2 + 5)]
    received.record(db, "rule-a", [{"id": i} for i in ids], "d3", KEEP)
    assert received.not_received(db, "rule-a", ids) == []


def test_runs_marked_received_ahead_of_their_job_are_not_missing(db: redis.Redis) -> None:
    received.record_runs(db, "rule-a", ["r1"], KEEP)
    assert received.not_received(db, "rule-a", ["r1", "r2"]) == ["r2"]
    assert received.deliveries_since(db, "rule-a", 0) == []  # no delivery yet
