"""Commands issued in one turn of the event loop share a round trip; each caller still gets its
own reply or error, against a real redis-server."""

from __future__ import annotations

import ast
import asyncio
import inspect
import signal
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions
from redis._parsers.base import BaseParser

from ingress import autopipeline
from ingress.autopipeline import AutoPipeline, _Incomplete, pack, parse
from lswh_core.redis import async_redis
from tests.support.procs import RedisServer, free_port

DB = 21
# Every test's event loop is bounded: a hang fails the test instead of holding the run.
TEST_BOUND_SECONDS = 20.0


def run(url: str, body: Callable[[AutoPipeline, redis.asyncio.Redis], Awaitable[Any]], budget: float = 2.0,
        max_connections: int = 64) -> Any:
    async def go() -> Any:
        client = async_redis(url, max_connections=max_connections)
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


def test_commands_land_in_the_urls_database_behind_its_password() -> None:
    server = RedisServer()
    try:
        redis.Redis(port=server.port).config_set("requirepass", "pa55word")

        async def body(pipeline: AutoPipeline, client: redis.asyncio.Redis) -> Any:
            return await pipeline.execute("SET", "where", "here")

        assert run(f"redis://:pa55word@127.0.0.1:{server.port}/5", body) == b"OK"
        assert redis.Redis(port=server.port, db=5, password="pa55word").get("where") == b"here"
        assert redis.Redis(port=server.port, db=0, password="pa55word").get("where") is None
    finally:
        server.stop()


def test_a_connection_closed_by_redis_fails_its_callers_and_the_next_command_reconnects(
        redis_server: RedisServer, url: str) -> None:
    async def body(pipeline: AutoPipeline, client: redis.asyncio.Redis) -> list[Any]:
        results: list[Any] = []
        for _ in range(5):  # more drops than the pool below has connections: none may leak
            results.append(await pipeline.execute("INCR", "n"))
            killer = redis.Redis(port=redis_server.port)
            killer.client_kill_filter(_type="normal", skipme=True)
            killer.close()
            results.append(await asyncio.gather(pipeline.execute("PING"), return_exceptions=True))
        return results

    results = run(url, body, max_connections=2)
    assert results[0::2] == [1, 2, 3, 4, 5]  # each command after a drop ran on a new connection
    for (outcome,) in results[1::2]:  # the PING right after a kill: failed, or already reconnected
        assert outcome == b"PONG" or isinstance(outcome, redis.exceptions.ConnectionError), outcome


def test_redis_py_connections_keep_their_streams_where_the_pipeline_reads_them(url: str) -> None:
    """The seam AutoPipeline uses: a connected redis-py asyncio Connection's _reader and _writer."""
    async def go() -> tuple[Any, Any]:
        client = async_redis(url)
        try:
            connection = await client.connection_pool.get_connection()
            try:
                return connection._reader, connection._writer
            finally:
                await client.connection_pool.release(connection)
        finally:
            await client.aclose()

    reader, writer = asyncio.run(go())
    assert isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter)


@pytest.mark.parametrize(("command", "packed"), [
    (("PING",), b"*1\r\n$4\r\nPING\r\n"),
    (("SET", "k", b"\x00\r\n", 7, 1.5), b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\x00\r\n\r\n$1\r\n7\r\n$3\r\n1.5\r\n"),
    (("SET", "é", ""), b"*3\r\n$3\r\nSET\r\n$2\r\n\xc3\xa9\r\n$0\r\n\r\n"),
])
def test_commands_are_packed_as_resp_arrays_of_bulk_strings(command: tuple[Any, ...], packed: bytes) -> None:
    assert pack(command) == packed


def test_packing_refuses_what_redis_py_would_refuse() -> None:
    with pytest.raises(redis.exceptions.DataError):
        pack(("SET", "k", None))
    with pytest.raises(redis.exceptions.DataError):
        pack(("SET", "k", True))


@pytest.mark.parametrize(("wire", "reply"), [
    (b":42\r\n", 42), (b"+OK\r\n", b"OK"), (b"$4\r\na\r\nb\r\n", b"a\r\nb"), (b"$-1\r\n", None), (b"_\r\n", None),
    (b"*2\r\n:1\r\n$1\r\nx\r\n", [1, b"x"]), (b"*-1\r\n", None), (b"$0\r\n\r\n", b""),
])
def test_each_reply_type_is_read_whole_and_only_when_whole(wire: bytes, reply: Any) -> None:
    assert parse(wire + b":7\r\n", 0) == (reply, len(wire))
    for cut in range(len(wire)):
        with pytest.raises(_Incomplete):
            parse(wire[:cut], 0)


def test_error_replies_become_the_exceptions_redis_py_raises() -> None:
    error, end = parse(b"-NOSCRIPT No matching script.\r\n", 0)
    assert isinstance(error, redis.exceptions.NoScriptError) and end == 31
    error, _ = parse(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", 0)
    assert type(error) is redis.exceptions.ResponseError


def test_an_unknown_reply_type_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="unexpected reply type"):
        parse(b"?what\r\n", 0)


# The redis-py releases autopipeline's private names (below) were checked on: this file ran
# green on each. pyproject pins the major; a release not listed here fails until someone runs
# this file on it and adds it.
CHECKED_REDIS_PY = ("8.1.0",)
# Every private name of redis-py that ingress/autopipeline.py touches, and the test that pins
# its shape: a private name added there without one fails
# test_every_private_redis_py_name_autopipeline_touches_is_pinned.
PRIVATE_NAMES = {
    "connection._reader": "test_redis_py_connections_keep_their_streams_where_the_pipeline_reads_them",
    "connection._writer": "test_redis_py_connections_keep_their_streams_where_the_pipeline_reads_them",
    "redis._parsers.base.BaseParser": "test_redis_py_parse_error_has_the_shape_parse_calls",
}


def test_the_installed_redis_py_is_a_release_the_private_names_were_checked_on() -> None:
    installed = metadata.version("redis")
    assert installed in CHECKED_REDIS_PY, (
        f"redis-py {installed}: ingress/autopipeline.py drives its private names {sorted(PRIVATE_NAMES)}, "
        f"checked only on {CHECKED_REDIS_PY}; run this file on {installed} and add it to CHECKED_REDIS_PY")


def _private_names_touched() -> set[str]:
    """Private attributes read off redis-py's objects (anything but our own `self`), and names
    imported from redis-py's private modules."""
    tree = ast.parse(Path(autopipeline.__file__).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
            names.add(f"{ast.unparse(node.value)}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("redis") and any(
                part.startswith("_") for part in (node.module or "").split(".")):
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("redis")
                         and any(part.startswith("_") for part in alias.name.split(".")))
    return names


def test_every_private_redis_py_name_autopipeline_touches_is_pinned() -> None:
    assert _private_names_touched() == set(PRIVATE_NAMES)
    assert all(name in globals() for name in PRIVATE_NAMES.values())


def test_redis_py_parse_error_has_the_shape_parse_calls() -> None:
    """parse() hands each error line to BaseParser.parse_error (a classmethod taking the line
    without its '-'), which maps the prefix to redis-py's class, as redis-py's own parsers do."""
    assert isinstance(inspect.getattr_static(BaseParser, "parse_error"), classmethod)
    assert list(inspect.signature(BaseParser.parse_error).parameters) == ["response"]
    assert type(BaseParser.parse_error("NOSCRIPT No matching script.")) is redis.exceptions.NoScriptError
    assert type(BaseParser.parse_error("READONLY You can't write against a read only replica.")) \
        is redis.exceptions.ReadOnlyError
    error = BaseParser.parse_error("WRONGTYPE Operation against a key")
    assert type(error) is redis.exceptions.ResponseError and str(error) == "WRONGTYPE Operation against a key"
