"""Commands issued in one turn of the event loop share a round trip; each caller still gets its
own reply or error, against a real redis-server."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions

from ingress.autopipeline import AutoPipeline
from lswh_core.redis import async_redis
from tests.support.procs import RedisServer, free_port

DB = 21
# Every test's event loop is bounded: a hang fails the test instead of holding the run.
TEST_BOUND_SECONDS = 20.0


def run(url: str, body: Callable[[AutoPipeline, redis.asyncio.Redis], Awaitable[Any]], budget: float = 2.0) -> Any:
    async def go() -> Any:
        client = async_redis(url)
        pipeline = AutoPipeline(client, budget)
        try:
            async with asyncio.timeout(TEST_BOUND_SECONDS):
                return await body(pipeline, client)
        finally:
            await pipeline.aclose()
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    redis.Redis(port=redis_server.port, db=DB).flushdb()
    return f"redis://127.0.0.1:{redis_server.port}/{DB}"


def connections_received(server: RedisServer) -> int:
    return int(redis.Redis(port=server.port).info("stats")["total_connections_received"])


def test_commands_issued_in_one_turn_share_one_connection_and_get_their_own_replies(
        redis_server: RedisServer, url: str) -> None:
    async def body(pipeline: AutoPipeline, client: redis.asyncio.Redis) -> list[Any]:
        futures = [pipeline.execute("INCR", "counter") for _ in range(50)]
        return await asyncio.gather(*futures)

    before = connections_received(redis_server)
    replies = run(url, body)
    # One for the batch; the count itself opens one more.
    assert connections_received(redis_server) - before == 2
    assert replies == list(range(1, 51))


def test_one_commands_error_is_its_callers_alone(url: str) -> None:
    async def body(pipeline: AutoPipeline, client: redis.asyncio.Redis) -> list[Any]:
        await client.rpush("a-list", "x")
        futures = [pipeline.execute("SET", "k", "v"), pipeline.execute("INCR", "a-list"),
                   pipeline.execute("GET", "k")]
        return await asyncio.gather(*futures, return_exceptions=True)

    ok, wrong_type, value = run(url, body)
    assert ok is True or ok == b"OK"
    assert isinstance(wrong_type, redis.exceptions.ResponseError)
    assert value == b"v"


def test_a_caller_that_gives_up_leaves_the_others_their_replies(url: str) -> None:
    async def body(pipeline: AutoPipeline, client: redis.asyncio.Redis) -> tuple[Any, ...]:
        given_up = pipeline.execute("INCR", "n")
        kept = pipeline.execute("INCR", "n")
        given_up.cancel()
        return await kept, await client.get("n")

    # The cancelled caller's command was queued already: it still runs, its reply is dropped.
    assert run(url, body) == (2, b"2")


def test_a_command_sent_alone_travels_in_a_round_trip_of_its_own(redis_server: RedisServer, url: str) -> None:
    async def body(pipeline: AutoPipeline, client: redis.asyncio.Redis) -> list[Any]:
        futures = [pipeline.execute("SET", "small-1", "x"), pipeline.execute("SET", "large", "y" * 100_000, alone=True),
                   pipeline.execute("SET", "small-2", "z")]
        return await asyncio.gather(*futures)

    before = connections_received(redis_server)
    assert len(run(url, body)) == 3
    # Two batches in flight at once, on two connections; the count opens one more.
    assert connections_received(redis_server) - before == 3


def test_unreachable_redis_fails_every_caller_of_the_batch() -> None:
    async def body(pipeline: AutoPipeline, client: redis.asyncio.Redis) -> list[Any]:
        futures = [pipeline.execute("PING") for _ in range(3)]
        return await asyncio.gather(*futures, return_exceptions=True)

    replies = run(f"redis://127.0.0.1:{free_port()}/0", body, budget=1.0)
    assert len(replies) == 3
    assert all(isinstance(r, redis.exceptions.ConnectionError | TimeoutError) for r in replies), replies


def test_a_hung_redis_fails_the_batch_within_its_budget_then_serves_again() -> None:
    server = RedisServer()
    try:
        async def body(pipeline: AutoPipeline, client: redis.asyncio.Redis) -> tuple[list[Any], Any]:
            await pipeline.execute("PING")  # a pooled connection, so the hang is in the reply
            server.proc.signal_group(signal.SIGSTOP)
            try:
                hung = await asyncio.gather(*(pipeline.execute("PING") for _ in range(3)), return_exceptions=True)
            finally:
                server.proc.signal_group(signal.SIGCONT)
            return hung, await pipeline.execute("PING")

        hung, after = run(server.url, body, budget=0.5)
        assert all(isinstance(r, TimeoutError) for r in hung), hung
        assert after is True or after == b"PONG"
    finally:
        server.stop()
