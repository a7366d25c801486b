"""The one Redis connection factory (sync for workers and CLI, asyncio for the ingress)."""

from __future__ import annotations

import redis
import redis.asyncio

# The ingress must answer within LangSmith's 5 s: a Redis that hangs must fail fast.
SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0


def sync_redis(url: str, *, socket_timeout: float | None = None) -> redis.Redis:
    """RQ needs bytes (decode_responses off). Workers block on BLPOP, so no read timeout by default."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def async_redis(url: str, *, max_connections: int = 64) -> redis.asyncio.Redis:
    """A burst beyond max_connections waits for a free connection (within the caller's
    budget) instead of failing at once, as the default pool would.

    No socket_timeout: every async caller bounds its whole call with asyncio.timeout (each
    enqueue batch, the scrape, readyz), and a cancelled command makes redis-py drop the
    connection. With one set, redis-py wraps each write in asyncio.wait_for (a Task per command
    on Python 3.11) and each read in a timeout: ~25-40 us of CPU per command in process, for a
    bound the caller's budget already enforces."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=None,
        retry_on_timeout=False,
    )
    return redis.asyncio.Redis.from_pool(pool)  # closing the client closes its pool
