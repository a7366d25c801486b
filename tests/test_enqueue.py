"""The ingress' one-round-trip enqueue writes jobs that RQ itself reads back as its own."""

from __future__ import annotations

import asyncio
import random
import zlib

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus

from ingress.enqueue import DeliveryQueue, zlib_stored
from lswh_core import contract
from lswh_core.redis import async_redis
from lswh_core.settings import Settings
from tests.support.procs import RedisServer

DB = 3


def store(server: RedisServer, settings: Settings, body: bytes, delivery_id: str) -> bool:
    async def go() -> bool:
        client = async_redis(settings.redis_url)
        try:
            return (await DeliveryQueue(client, settings).store(body, delivery_id, 2)).duplicate
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture
def sync(redis_server: RedisServer) -> redis.Redis:
    client = redis.Redis(port=redis_server.port, db=DB)
    client.flushdb()
    return client


@pytest.mark.parametrize("retries", [0, 3])
def test_job_is_what_rq_would_have_enqueued(redis_server: RedisServer, sync: redis.Redis, retries: int) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/{DB}", retries=retries,
                        retry_base_seconds=10, job_timeout=123, failed_keep_days=2)
    assert store(redis_server, settings, b'{"runs": []}', "d" * 32) is False
    queue = Queue(contract.QUEUE, connection=sync)
    assert queue.job_ids == [contract.delivery_job_id("d" * 32)]
    job = Job.fetch(queue.job_ids[0], connection=sync)
    assert (job.func_name, job.args, job.kwargs) == (contract.DELIVERY_JOB, ("d" * 32,), {})
    assert job.get_status() == JobStatus.QUEUED
    assert job.origin == contract.QUEUE and job.timeout == 123 and job.failure_ttl == 2 * 86_400
    assert job.description == contract.delivery_job_description("d" * 32, 2)
    if retries:
        assert job.retries_left == 3
        assert job.retry_intervals is not None and len(job.retry_intervals) == 3
        assert 7 <= job.retry_intervals[0] <= 13 and job.retry_intervals[2] > job.retry_intervals[1]
    else:
        assert job.retries_left is None and job.retry_intervals is None
    assert queue in Queue.all(connection=sync)


def test_second_store_of_a_delivery_writes_nothing(redis_server: RedisServer, sync: redis.Redis) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/{DB}")
    assert store(redis_server, settings, b"x", "e" * 32) is False
    assert store(redis_server, settings, b"x", "e" * 32) is True
    assert sync.llen(f"rq:queue:{contract.QUEUE}") == 1
    assert sync.get(contract.delivery_key("e" * 32)) == b"x"


def test_hash_is_kept_keep_days_and_raw_body_replay_days(redis_server: RedisServer, sync: redis.Redis) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/{DB}", keep_days=7, replay_days=2)
    store(redis_server, settings, b"y", "f" * 32)
    assert settings.keep_seconds - 60 < sync.ttl(contract.seen_key("f" * 32)) <= settings.keep_seconds
    assert settings.replay_seconds - 60 < sync.ttl(contract.delivery_key("f" * 32)) <= settings.replay_seconds
    assert sync.get(contract.delivery_key("f" * 32)) == b"y"


def test_a_resent_body_is_a_duplicate_after_its_raw_body_expired(redis_server: RedisServer,
                                                                  sync: redis.Redis) -> None:
    """Only the hash answers duplicates: a body past LSWH_REPLAY_DAYS is not stored again."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/{DB}")
    assert store(redis_server, settings, b"z", "a" * 32) is False
    sync.delete(contract.delivery_key("a" * 32), f"rq:queue:{contract.QUEUE}")
    assert store(redis_server, settings, b"z", "a" * 32) is True
    assert sync.exists(contract.delivery_key("a" * 32)) == 0
    assert sync.llen(f"rq:queue:{contract.QUEUE}") == 0


def test_a_redis_that_lost_the_script_gets_it_again_and_stores(redis_server: RedisServer, sync: redis.Redis) -> None:
    """A restarted or flushed Redis answers NOSCRIPT, which stored nothing: the store loads the
    script and runs it."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/{DB}")

    async def go() -> list[bool]:
        client = async_redis(settings.redis_url)
        queue = DeliveryQueue(client, settings)
        try:
            first = await queue.store(b"1", "1" * 32, 1)
            await client.script_flush()
            second = await queue.store(b"2", "2" * 32, 1)
            return [first.duplicate, second.duplicate]
        finally:
            await client.aclose()

    assert asyncio.run(go()) == [False, False]
    assert sync.lrange(f"rq:queue:{contract.QUEUE}", 0, -1) == [
        contract.delivery_job_id(d).encode() for d in ("1" * 32, "2" * 32)]


def test_deliveries_stored_in_one_turn_each_get_their_own_answer(redis_server: RedisServer,
                                                                 sync: redis.Redis) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/{DB}")
    ids = [f"{n:032x}" for n in range(20)]

    async def go() -> list[bool]:
        client = async_redis(settings.redis_url)
        queue = DeliveryQueue(client, settings)
        try:
            # The same body twice in one turn: one is stored, the other is its duplicate.
            stored = await asyncio.gather(*(queue.store(b"b" + i.encode(), i, 1) for i in [*ids, ids[0]]))
            return [s.duplicate for s in stored]
        finally:
            await client.aclose()

    assert asyncio.run(go()) == [False] * 20 + [True]
    assert sync.llen(f"rq:queue:{contract.QUEUE}") == 20


@pytest.mark.parametrize("size", [0, 1, 87, 200, 16_384, 16_385, 100_000])
def test_zlib_stored_is_zlib_at_level_0_byte_for_byte(size: int) -> None:
    data = bytes(random.Random(size).randrange(256) for _ in range(size))
    assert zlib_stored(data) == zlib.compress(data, 0)
    assert zlib.decompress(zlib_stored(data)) == data
