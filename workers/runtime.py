"""What a worker process keeps between jobs: clients, pools, one event loop, dataset ids.

RQ's SimpleWorker runs every job in this process, so connection pools stay warm. Jobs run
their I/O as coroutines on one long-lived loop thread (httpx's async client is bound to its
loop); the synchronous langsmith SDK runs in a small thread pool beside it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import redis

from lswh_core import egress
from lswh_core.redis import sync_redis
from lswh_core.rules import Rules, load_rules
from lswh_core.settings import Settings
from workers.langsmith import LangSmith
from workers.recorder import Recorder
from workers.s3 import HostRule, parse_rules
from workers.transport import AiohttpTransport

T = TypeVar("T")

# bench/workers.py: with aiohttp's pool under httpx (workers/transport.py) 32 concurrent GETs
# keep a 1,000-run delivery at the floor's pace; httpx's own pool got slower past 16.
S3_CONCURRENCY = 32
SDK_THREADS = 8


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules: tuple[HostRule, ...] = parse_rules(settings.s3_allowed_hosts)
        self.redis: redis.Redis = sync_redis(settings.redis_url, socket_timeout=30)
        # Read once per process; `lswh worker` checked the file at start (a mistake stops it there).
        self.pipeline_rules: Rules = load_rules(settings.rules_file, settings)
        self.datasets: dict[str, str] = {}
        self.queues: dict[str, str] = {}  # annotation queue name -> id
        self._executor = ThreadPoolExecutor(max_workers=SDK_THREADS, thread_name_prefix="lswh-sdk")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lswh-io", daemon=True)
        self._thread.start()
        self._http: httpx.AsyncClient | None = None
        self.recorder = Recorder()
        self.langsmith = LangSmith.for_settings(settings, self.redis, call=self.call, recorder=self.recorder)

    @property
    def http(self) -> httpx.AsyncClient:
        """Created on first use, on the loop thread (where it is used)."""
        if self._http is None:
            exact = [rule.host for rule in self.rules if rule.exact]
            if self.settings.s3_proxy == "env":  # docs/langsmith.md: Accounts, workspaces and proxies
                transport = AiohttpTransport(S3_CONCURRENCY, exact_hosts=[*exact, *egress.proxy_hosts()],
                                             proxy_for=egress.proxy_for, ssl=egress.ssl_context(egress.ca_bundle()))
            else:
                transport = AiohttpTransport(S3_CONCURRENCY, exact_hosts=exact)
            self._http = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
        return self._http

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the I/O loop and wait; if the wait is interrupted (job timeout,
        shutdown), the coroutine is cancelled rather than left running."""
        future = asyncio.run_coroutine_threadsafe(_in_context(contextvars.copy_context(), coro), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking SDK call, from a coroutine, on the SDK thread pool."""
        return await self._loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))


async def _in_context(context: contextvars.Context, coro: Coroutine[Any, Any, T]) -> T:
    """Run on the loop thread with the caller's context variables (the job's log fields:
    delivery_id, rule_id, run_id), which a task there would not inherit."""
    for var, value in context.items():
        var.set(value)
    return await coro


_runtime: Runtime | None = None
_runtime_pid: int | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """One per process (re-made after a fork: pools and threads do not survive one)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime = Runtime(Settings.from_env())
            _runtime_pid = os.getpid()
        return _runtime
