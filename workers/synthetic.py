"""Synthetic deliveries: runs found through the API (backfill, reconciliation) fed to the same job
path as a webhook delivery.

A synthetic body has the webhook payload's shape, `{"rule_id", "start_time", "end_time", "runs"}`,
with each run only its locator (the job path reads inputs and outputs in bulk through the API),
plus `lswh_source` (backfill or reconcile) and `lswh_created_at`. The latter makes each batch its
own delivery: a second backfill of the same window is processed (and counted) again instead of
being taken for a duplicate of the first, and examples stay single because their ids are derived
from dataset and run id. It is stored like the ingress stores a body (raw body for
LSWH_REPLAY_DAYS, duplicate check for LSWH_KEEP_DAYS) and its job is created like the ingress's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson
import redis as redis_py
from rq import Queue, Retry
from rq.job import Job

from lswh_core import contract
from lswh_core.settings import Settings

CHUNK_RUNS = 1_000  # runs per synthetic delivery: one delivery job's worth, like a large webhook
SOURCES = ("backfill", "reconcile")


def bodies(rule_id: str, runs: Sequence[dict[str, Any]], *, source: str, start: dt.datetime, end: dt.datetime,
           created_at: dt.datetime) -> list[bytes]:
    """The raw bodies for `runs`, at most CHUNK_RUNS runs each."""
    if source not in SOURCES:
        raise ValueError(f"lswh_source must be one of {SOURCES}, got {source!r}")
    out = []
    for first in range(0, len(runs), CHUNK_RUNS):
        out.append(orjson.dumps({
            "rule_id": rule_id, "start_time": start.isoformat(), "end_time": end.isoformat(),
            "runs": list(runs[first:first + CHUNK_RUNS]), "lswh_source": source,
            "lswh_created_at": created_at.isoformat(), "lswh_chunk": first // CHUNK_RUNS}))
    return out


def feed(redis: redis_py.Redis, settings: Settings, rule_id: str, runs: Sequence[dict[str, Any]], *, source: str,
         start: dt.datetime, end: dt.datetime) -> list[tuple[str, int]]:
    """Enqueue `runs` as synthetic deliveries; (delivery id, runs) of each."""
    created = dt.datetime.now(dt.UTC)
    fed = []
    for first, body in zip(range(0, len(runs), CHUNK_RUNS),
                           bodies(rule_id, runs, source=source, start=start, end=end, created_at=created),
                           strict=True):
        count = len(runs[first:first + CHUNK_RUNS])
        fed.append((enqueue(redis, settings, body, count), count))
    return fed


def enqueue(redis: redis_py.Redis, settings: Settings, body: bytes, runs: int) -> str:
    """Store the body and enqueue its delivery job; the delivery id."""
    delivery_id = contract.delivery_id_of(body)
    with redis.pipeline() as pipe:
        pipe.set(contract.delivery_key(delivery_id), body, ex=settings.replay_seconds)
        pipe.set(contract.seen_key(delivery_id), b"1", ex=settings.keep_seconds)
        pipe.execute()
    enqueue_job(redis, settings, delivery_id, runs, contract.delivery_job_id(delivery_id))
    return delivery_id


def enqueue_job(redis: redis_py.Redis, settings: Settings, delivery_id: str, runs: int, job_id: str) -> Job:
    """A `process_delivery` job as the ingress creates one: lifetimes, retries with jittered backoff."""
    queue = Queue(contract.QUEUE, connection=redis)
    retry = None
    if settings.retries:
        retry = Retry(max=settings.retries,
                      interval=contract.retry_intervals(settings.retries, settings.retry_base_seconds))
    job = Job.create(contract.DELIVERY_JOB, args=(delivery_id,), connection=redis, id=job_id,
                     description=contract.delivery_job_description(delivery_id, runs), retry=retry,
                     origin=queue.name, **contract.job_lifetimes(settings))
    return queue.enqueue_job(job)
