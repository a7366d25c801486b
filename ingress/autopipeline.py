"""Redis commands issued in the same turn of the event loop share one write on one connection.

Under load many deliveries reach the store step in the same turn of the loop; at a steady
1,000 req/s each arrives alone. Either way, redis-py's per-command path (a connection taken
from the pool and given back, a Pipeline object, the retry wrapper, packing, then a parser call
per reply) cost ~150 us of CPU for a bare PING here, where the round trip itself (a write, a
wake-up, a read) costs ~40 us. So small commands travel on one connection kept open, used as a
pipeline: each command is packed once and queued, the commands of one turn go out in one
write when the turn ends, and a reader task hands the replies back in order, each to its own
caller (ioredis calls this auto-pipelining). redis-py still makes the connection (the URL's
host or socket, TLS, AUTH, SELECT, as its pool would), and still carries what is sent `alone`:
a large value on a pooled connection of its own, not holding up the small ones.

Batches are not transactions: each command stands on its own, and one command's error is its
caller's alone (raised as redis-py would raise it: NoScriptError for NOSCRIPT). A connection
that fails, or gives no reply within the budget, is dropped and every command waiting on it
fails; the next command opens a new one. A command whose reply was lost may still have run:
the caller answers 503 and the retry is told it is a duplicate.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.asyncio
import redis.exceptions
from redis._parsers.base import BaseParser

Command = tuple[Any, ...]


class AutoPipeline:
    def __init__(self, client: redis.asyncio.Redis, budget_seconds: float) -> None:
        """budget_seconds bounds each command, from its queueing (or connecting) to its reply:
        the client has no socket timeout of its own (lswh_core.redis.async_redis)."""
        self._client = client
        self._budget = budget_seconds
        self._unsent: list[bytes] = []  # packed commands of this turn
        self._waiting: deque[asyncio.Future[Any]] = deque()  # one per command not yet answered, in order
        self._link: _Link | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._flush_due = False
        self._alone: set[asyncio.Future[Any]] = set()  # the loop keeps only weak references to tasks
        self._releasing: set[asyncio.Task[None]] = set()  # dropped links, until their connection is back

    def execute(self, *command: Any, alone: bool = False) -> asyncio.Future[Any]:
        """The reply to `command`, or its error. `alone` sends it now on a pooled connection of
        its own (a large value must not hold up the small ones)."""
        if alone:
            task = asyncio.ensure_future(self._send_alone(command))
            self._alone.add(task)
            task.add_done_callback(self._alone.discard)
            return task
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._unsent.append(pack(command))
        self._waiting.append(future)
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush)  # runs once every callback of this turn has queued its command
        return future

    async def _send_alone(self, command: Command) -> Any:
        async with asyncio.timeout(self._budget):
            return await self._client.execute_command(*command)

    def _flush(self, budget: float | None = None) -> None:
        self._flush_due = False
        if not self._unsent:
            return
        link = self._link
        if link is None:
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return  # _connect flushes once connected
        data, self._unsent = b"".join(self._unsent), []
        link.write(data)
        # Everything written so far must be answered within the budget, or the link is dropped.
        written = link.answered + len(self._waiting)
        asyncio.get_running_loop().call_later(budget or self._budget, self._expire, link, written)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self._budget):
                # Held from the pool for as long as it works, so closing the client closes it too.
                connection = await self._client.connection_pool.get_connection()
        except Exception as exc:
            self._fail(self._waiting, exc)
            self._waiting, self._unsent = deque(), []
            return
        finally:
            self._connecting = None
        self._link = _Link(self._client.connection_pool, connection, self._waiting, self._drop)
        # What waited for the connection has what is left of its budget, not a new one.
        self._flush(max(0.05, self._budget - (loop.time() - started)))

    def _expire(self, link: _Link, written: int) -> None:
        if link is self._link and link.answered < written:
            self._drop(link, TimeoutError(f"no reply from Redis within {self._budget:g} s"))

    def _drop(self, link: _Link, exc: Exception) -> None:
        """The link failed: every command written or waiting to be gets the error."""
        if link is not self._link:
            return
        self._link = None
        self._release(link)
        self._fail(self._waiting, exc)
        self._waiting, self._unsent = deque(), []

    def _release(self, link: _Link) -> None:
        task = link.close()
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    @staticmethod
    def _fail(futures: deque[asyncio.Future[Any]], exc: Exception) -> None:
        for future in futures:
            if not future.done():  # a caller that gave up has cancelled its future
                future.set_exception(exc)

    async def aclose(self) -> None:
        """Wait for the commands in flight (each ends within the budget), then close."""
        pending = [f for f in self._waiting if not f.done()] + list(self._alone)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._connecting is not None:
            self._connecting.cancel()
        if self._link is not None:
            link, self._link = self._link, None
            self._release(link)
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)


class _Link:
    """A connection held from redis-py's pool, read by a task of its own that answers `waiting`
    in order."""

    def __init__(self, pool: redis.asyncio.ConnectionPool, connection: Any, waiting: deque[asyncio.Future[Any]],
                 on_failure: Callable[[_Link, Exception], None]) -> None:
        self._pool = pool
        self._connection = connection
        # redis-py's asyncio Connection keeps its streams here once connected (pinned by
        # tests/test_autopipeline.py).
        self._reader: asyncio.StreamReader = connection._reader
        self._writer: asyncio.StreamWriter = connection._writer
        self._waiting = waiting
        self._on_failure = on_failure
        self.answered = 0
        self._reading = asyncio.get_running_loop().create_task(self._read())

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def _read(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    raise redis.exceptions.ConnectionError("Redis closed the connection")
                buffer += chunk
                position = 0
                while True:
                    try:
                        reply, position = parse(buffer, position)
                    except _Incomplete:
                        break
                    self.answered += 1
                    future = self._waiting.popleft()
                    if future.done():
                        continue
                    if isinstance(reply, redis.exceptions.ResponseError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
                buffer = buffer[position:]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection, or a reply we cannot read: the link is done
            self._on_failure(self, exc if isinstance(exc, redis.exceptions.RedisError | OSError | TimeoutError)
                             else redis.exceptions.ConnectionError(f"unreadable reply from Redis: {exc!r}"))

    def close(self) -> asyncio.Task[None]:
        """Stop reading; the task that closes the connection and hands it back to the pool (a
        slot of a BlockingConnectionPool must not leak). Called once: the pipeline forgets the
        link as it closes it."""
        self._reading.cancel()
        return asyncio.get_running_loop().create_task(self._release())

    async def _release(self) -> None:
        await asyncio.gather(self._reading, return_exceptions=True)  # let the cancelled reader end
        try:
            await self._connection.disconnect()
        finally:
            await self._pool.release(self._connection)


def pack(command: Command) -> bytes:
    """RESP: an array of bulk strings. Arguments are bytes, str (UTF-8) or int, as redis-py
    would encode them."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            value = b"%d" % arg
        elif isinstance(arg, float):
            value = repr(arg).encode()
        else:
            raise redis.exceptions.DataError(f"cannot send a {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class _Incomplete(Exception):
    pass


def parse(buffer: bytes, position: int) -> tuple[Any, int]:
    """One RESP2 reply (and RESP3's null) from buffer[position:]: (reply, where the next one
    starts), or _Incomplete. An error reply is returned as the exception redis-py would raise."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[position:position + 1], buffer[position + 1:end]
    after = end + 2
    if kind == b":":
        return int(line), after
    if kind == b"+":
        return line, after
    if kind == b"-":
        return BaseParser.parse_error(line.decode(errors="replace")), after
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            raise _Incomplete
        return buffer[after:after + length], after + length + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parse(buffer, after)
            items.append(item)
        return items, after
    if kind == b"_":
        return None, after
    raise ValueError(f"unexpected reply type {kind!r}")
