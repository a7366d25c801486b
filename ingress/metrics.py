"""The ingress's Prometheus metrics: its own counters and histograms, and the queue's figures
read from Redis at scrape time.

The queue figures cost two round trips per scrape (a handful of O(1) reads and one LINDEX for
the oldest job, then that job's enqueued_at and each worker's state), read with the ingress's
async client, so a scrape never blocks the event loop. Every ingress replica reads the same
Redis and so reports the same values: rules and dashboards take max() across replicas.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import redis.asyncio
import redis.exceptions
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from lswh_core import contract
from lswh_core import metrics as m

# RQ's key names, from RQ's own classes (no connection needed): the installed RQ names them.
QUEUE_KEY = Queue.redis_queue_namespace_prefix + contract.QUEUE
SCHEDULED_KEY = ScheduledJobRegistry.key_template.format(contract.QUEUE)
STARTED_KEY = StartedJobRegistry.key_template.format(contract.QUEUE)
FAILED_KEY = FailedJobRegistry.key_template.format(contract.QUEUE)
WORKERS_KEY = WORKERS_BY_QUEUE_KEY % contract.QUEUE
SCRAPE_BUDGET_SECONDS = 2.0


class IngressMetrics:
    """This process's own figures, in a registry of its own (nothing global to collide with)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(_short(m.DELIVERIES), m.DELIVERIES.help, m.DELIVERIES.labels,
                                  registry=self.registry)
        # One child per outcome, resolved once: labels() costs a lock and a dict lookup per call.
        self.outcomes = {outcome: self.deliveries.labels(outcome) for outcome in m.DELIVERY_OUTCOMES}
        self.runs = Counter(_short(m.RUNS_RECEIVED), m.RUNS_RECEIVED.help, registry=self.registry)
        self.seconds = Histogram(m.REQUEST_SECONDS.name, m.REQUEST_SECONDS.help, buckets=m.REQUEST_SECONDS.buckets,
                                 registry=self.registry)
        self.body_bytes = Histogram(m.BODY_SIZE.name, m.BODY_SIZE.help, buckets=m.BODY_SIZE.buckets,
                                    registry=self.registry)

    def delivery(self, outcome: str, seconds: float, body_bytes: int | None, runs: int = 0) -> None:
        self.outcomes[outcome].inc()
        self.seconds.observe(seconds)
        if body_bytes is not None:
            self.body_bytes.observe(body_bytes)
        if outcome == "accepted":
            self.runs.inc(runs)

    async def exposition(self, client: redis.asyncio.Redis) -> bytes:
        queue = await read_queue(client)
        return generate_latest(self.registry) + generate_latest(_Snapshot(queue))


def _short(metric: m.Metric) -> str:
    """prometheus-client adds `_total` to a counter's name itself."""
    return metric.name.removesuffix("_total")


@dataclass
class QueueState:
    redis_up: bool = False
    depth: int = 0
    oldest_age: float = 0.0
    scheduled: int = 0
    started: int = 0
    failed: int = 0
    workers: dict[str, int] = field(default_factory=dict)
    reconcile_last_success: float | None = None


async def read_queue(client: redis.asyncio.Redis, now: float | None = None) -> QueueState:
    try:
        async with asyncio.timeout(SCRAPE_BUDGET_SECONDS):
            return await _read_queue(client, time.time() if now is None else now)
    except (TimeoutError, redis.exceptions.RedisError, OSError):
        return QueueState(redis_up=False)


async def _read_queue(client: redis.asyncio.Redis, now: float) -> QueueState:
    async with client.pipeline(transaction=False) as pipe:
        pipe.llen(QUEUE_KEY)
        pipe.lindex(QUEUE_KEY, 0)
        pipe.zcard(SCHEDULED_KEY)
        # Registries hold expiry times as scores; entries past theirs are gone, just not cleaned yet.
        pipe.zcount(STARTED_KEY, now, "+inf")
        pipe.zcount(FAILED_KEY, now, "+inf")
        pipe.smembers(WORKERS_KEY)
        pipe.get(contract.RECONCILE_LAST_SUCCESS_KEY)
        depth, head, scheduled, started, failed, worker_keys, reconciled = await pipe.execute()
    worker_keys = sorted(worker_keys)
    async with client.pipeline(transaction=False) as pipe:
        if head is not None:
            pipe.hget(Job.redis_job_namespace_prefix.encode() + head, "enqueued_at")
        for key in worker_keys:
            pipe.hget(key, "state")
        answers = await pipe.execute()
    oldest_age = 0.0
    if head is not None:
        oldest_age = _age(answers.pop(0), now)
    workers = dict.fromkeys(m.WORKER_STATES, 0)
    for state in answers:
        if state is not None:  # a worker key expires when its worker dies without deregistering
            name = state.decode()
            workers[name] = workers.get(name, 0) + 1
    return QueueState(redis_up=True, depth=int(depth), oldest_age=oldest_age, scheduled=int(scheduled),
                      started=int(started), failed=int(failed), workers=workers,
                      reconcile_last_success=float(reconciled) if reconciled is not None else None)


def _age(enqueued_at: bytes | None, now: float) -> float:
    """RQ writes enqueued_at as UTC `%Y-%m-%dT%H:%M:%S.%fZ` (rq.utils.utcformat)."""
    if not enqueued_at:
        return 0.0
    try:
        when = datetime.fromisoformat(enqueued_at.decode().replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, now - when.timestamp())


class _Snapshot(Collector):
    def __init__(self, state: QueueState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.state
        yield GaugeMetricFamily(m.REDIS_UP.name, m.REDIS_UP.help, value=1 if s.redis_up else 0)
        if not s.redis_up:
            return
        for spec, value in ((m.QUEUE_DEPTH, s.depth), (m.QUEUE_OLDEST_AGE, s.oldest_age),
                            (m.JOBS_SCHEDULED, s.scheduled), (m.JOBS_STARTED, s.started), (m.JOBS_FAILED, s.failed)):
            family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            family.add_metric([contract.QUEUE], value)
            yield family
        workers = GaugeMetricFamily(m.WORKERS.name, m.WORKERS.help, labels=m.WORKERS.labels)
        for state, count in sorted(s.workers.items()):
            workers.add_metric([state], count)
        yield workers
        if s.reconcile_last_success is not None:
            yield GaugeMetricFamily(m.RECONCILE_LAST_SUCCESS.name, m.RECONCILE_LAST_SUCCESS.help,
                                    value=s.reconcile_last_success)
