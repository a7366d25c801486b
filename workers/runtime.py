"""What a worker process keeps between jobs: clients, pools, one event loop, dataset ids.

RQ's SimpleWorker runs every job in this process, so connection pools stay warm.

One execution model: a job function (workers/jobs.py) hands ONE coroutine to the worker's
long-lived I/O loop thread (`run`) and waits for it; everything on a delivery's path is `async`
from there. The one thread hop inside a job is the LangSmith door's (workers/langsmith/door.py
`LangSmith.call`): the SDK's blocking `requests` calls run on its small thread pool. The
presigned objects (workers/fetch/s3.py, aiohttp) and the v2 client (httpx2) are async on the loop.

Redis is called synchronously, on the loop, without a thread hop. Decided, not overlooked: the
worker runs one job at a time (RQ SimpleWorker) and the loop serves only that job, so a Redis call
holds up nothing but the job's own other requests in flight. Measured on the bench machine
(2026-12-03, local redis-server): a small GET or SMEMBERS takes ~0.05 ms, the GET of a 1.2 MB
delivery body 2.7 ms. A slice makes a handful of calls (done pairs read and recorded, dedup
claims, queue memories, the budget's Lua call per LangSmith request), against the 20+ ms of each
LangSmith or S3 round trip they could delay, while a hop to a thread costs more than such a call
and made the job's path cross threads for every one. A Redis that stalls stalls the job either way:
its socket timeout (30 s) bounds each call.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis

from lswh_core import egress
from lswh_core.allowlist import HostRule, parse_rules
from lswh_core.redis import sync_redis
from lswh_core.rules import Rules, load_rules
from lswh_core.settings import Settings
from workers.bookkeeping import metrics
from workers.fetch.s3 import ObjectStore
from workers.langsmith.door import LangSmith

T = TypeVar("T")

# bench/workers.py: 32 concurrent GETs on aiohttp's pool keep a 1,000-run delivery at the floor's
# pace; httpx's own pool got slower past 16.
S3_CONCURRENCY = 32


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.s3_hosts: tuple[HostRule, ...] = parse_rules(settings.s3_allowed_hosts)  # LSWH_S3_ALLOWED_HOSTS
        self.redis: redis.Redis = sync_redis(settings.redis_url, socket_timeout=30)
        # Read once per process; `lswh worker` checked the file at start (a mistake stops it there).
        self.pipeline_rules: Rules = load_rules(settings.rules_file, settings)
        self.datasets: dict[str, str] = {}
        self.queues: dict[str, str] = {}  # annotation queue name -> id
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lswh-io", daemon=True)
        self._thread.start()
        exact = [rule.host for rule in self.s3_hosts if rule.exact]
        if settings.s3_proxy == "env":  # docs/langsmith.md: Accounts, workspaces and proxies
            self.objects = ObjectStore(S3_CONCURRENCY, exact_hosts=[*exact, *egress.proxy_hosts()],
                                       proxy_for=egress.proxy_for, ssl=egress.ssl_context(egress.ca_bundle()))
        else:
            self.objects = ObjectStore(S3_CONCURRENCY, exact_hosts=exact)
        self.langsmith = LangSmith.for_settings(settings, self.redis, recorder=metrics)

    def warm_up(self) -> None:
        """What the first job would otherwise pay once (`lswh worker` calls it before taking jobs)."""
        self.run(self.langsmith.warm_up())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a job's coroutine on the I/O loop and wait; if the wait is interrupted (job
        timeout, shutdown), the coroutine is cancelled rather than left running."""
        future = asyncio.run_coroutine_threadsafe(_in_context(contextvars.copy_context(), coro), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise


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
