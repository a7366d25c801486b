"""Content dedup against a real Redis server, shared by processes as workers share it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lswh_core.redis import sync_redis
from tests.support.procs import RedisServer
from workers.build.dedup import claim_many, content_hash, dedup_key, release

DAY = 86_400


def claim(connection, dataset, fingerprint, run_id, *, ttl_seconds):
    """One run's claim, made the way a worker makes it: as a slice of one."""
    return claim_many(connection, dataset, {run_id: fingerprint}, ttl_seconds=ttl_seconds)[run_id]


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def connection(redis_server):
    client = sync_redis(redis_server.url)
    client.flushdb()
    yield client
    client.close()


def test_the_hash_ignores_key_order_and_formatting_but_not_values():
    assert content_hash({"a": 1, "b": [1, {"c": "é"}]}) == content_hash({"b": [1, {"c": "é"}], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 1.0})  # as JSON tells them apart
    assert content_hash({"a": "x"}) != content_hash({"a": "x "})


def test_the_first_run_claims_inputs_and_a_second_run_with_the_same_inputs_is_told_who_wrote_them(connection):
    fingerprint = content_hash({"q": "hi"})
    assert claim(connection, "ds", fingerprint, "run-1", ttl_seconds=DAY) is None
    assert claim(connection, "ds", fingerprint, "run-2", ttl_seconds=DAY) == "run-1"


def test_the_same_run_retried_or_redelivered_finds_its_own_claim_and_writes(connection):
    fingerprint = content_hash({"q": "hi"})
    assert claim(connection, "ds", fingerprint, "run-1", ttl_seconds=DAY) is None
    assert claim(connection, "ds", fingerprint, "run-1", ttl_seconds=DAY) is None


def test_datasets_are_deduplicated_separately(connection):
    fingerprint = content_hash({"q": "hi"})
    assert claim(connection, "ds-a", fingerprint, "run-1", ttl_seconds=DAY) is None
    assert claim(connection, "ds-b", fingerprint, "run-2", ttl_seconds=DAY) is None


def test_the_memory_expires_and_each_claim_extends_it(connection):
    claim(connection, "ds", content_hash({"q": 1}), "run-1", ttl_seconds=100)
    assert 0 < connection.ttl(dedup_key("ds")) <= 100
    claim(connection, "ds", content_hash({"q": 2}), "run-2", ttl_seconds=DAY)
    assert connection.ttl(dedup_key("ds")) > 100


def test_only_the_owner_releases_a_claim_and_then_another_run_may_write(connection):
    fingerprint = content_hash({"q": "hi"})
    claim(connection, "ds", fingerprint, "run-1", ttl_seconds=DAY)
    assert release(connection, "ds", fingerprint, "run-2") is False
    assert claim(connection, "ds", fingerprint, "run-2", ttl_seconds=DAY) == "run-1"
    assert release(connection, "ds", fingerprint, "run-1") is True
    assert claim(connection, "ds", fingerprint, "run-2", ttl_seconds=DAY) is None


def test_a_slice_of_runs_is_claimed_in_one_round_trip_the_first_of_equal_inputs_writing(connection):
    claim(connection, "ds", content_hash({"q": "old"}), "run-0", ttl_seconds=DAY)
    answers = claim_many(connection, "ds", {"run-1": content_hash({"q": "new"}), "run-2": content_hash({"q": "old"}),
                                            "run-3": content_hash({"q": "new"})}, ttl_seconds=DAY)
    assert answers == {"run-1": None, "run-2": "run-0", "run-3": "run-1"}
    assert claim_many(connection, "ds", {"run-1": content_hash({"q": "new"})}, ttl_seconds=DAY) == {"run-1": None}
    assert claim_many(connection, "ds", {}, ttl_seconds=DAY) == {}


CLAIMER = """
import sys
from lswh_core.redis import sync_redis
from workers.build.dedup import claim_many, content_hash
url, run_prefix = sys.argv[1], sys.argv[2]
conn = sync_redis(url)
for i in range(300):
    run_id = f"{run_prefix}-{i}"
    owner = claim_many(conn, "shared", {run_id: content_hash({"i": i})}, ttl_seconds=86400)[run_id]
    print(i, owner or "mine")
"""


def test_two_processes_racing_on_the_same_inputs_let_exactly_one_run_write_each(connection, redis_server):
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, redis_server.url, name], stdout=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    mine = [{int(line.split()[0]) for line in out.splitlines() if line.endswith("mine")} for out in outputs]
    assert mine[0].isdisjoint(mine[1]) and mine[0] | mine[1] == set(range(300))
    assert connection.hlen(dedup_key("shared")) == 300
