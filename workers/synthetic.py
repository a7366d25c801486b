"""Synthetic deliveries: runs found through the API (backfill, reconciliation) fed to the same job
path as a webhook delivery.

A synthetic body has the webhook payload's shape, `{"rule_id", "start_time", "end_time", "runs"}`,
with each run its locator (reconciliation: the job path reads inputs and outputs in bulk through the
API) or its locator with the inputs and outputs the backfill already read (then the job path takes
them inline, as from a webhook, and reads nothing twice), plus `lswh_source` (backfill or reconcile)
and `lswh_created_at`. A body stays within LSWH_MAX_BODY_BYTES, the ingress's limit for a webhook:
the worker holds one delivery's body as it would hold a webhook's; a run whose data alone would
not fit travels as its locator, and the job path reads it through the API. The latter makes each batch its
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
DATA_FIELDS = ("inputs", "outputs")


def _envelope(rule_id: str, *, source: str, start: dt.datetime, end: dt.datetime, created_at: dt.datetime,
              chunk: int) -> dict[str, Any]:
    return {"rule_id": rule_id, "start_time": start.isoformat(), "end_time": end.isoformat(), "runs": [],
            "lswh_source": source, "lswh_created_at": created_at.isoformat(), "lswh_chunk": chunk}


def _pack(rule_id: str, runs: Sequence[dict[str, Any]], *, source: str, start: dt.datetime, end: dt.datetime,
          created_at: dt.datetime, max_bytes: int | None, first_chunk: int) -> list[tuple[bytes, int]]:
    """(body, runs in it): at most CHUNK_RUNS runs and max_bytes bytes a body. A run that could
    not fit even alone loses its inputs and outputs (the job path reads them through the API)."""
    if source not in SOURCES:
        raise ValueError(f"lswh_source must be one of {SOURCES}, got {source!r}")
    out: list[tuple[bytes, int]] = []
    chunk = first_chunk
    # The envelope's size with a chunk number of generous width, and a comma per run.
    overhead = len(orjson.dumps(_envelope(rule_id, source=source, start=start, end=end, created_at=created_at,
                                          chunk=10**9)))
    parts: list[bytes] = []
    size = overhead

    def flush() -> None:
        nonlocal parts, size, chunk
        if not parts:
            return
        head = orjson.dumps(_envelope(rule_id, source=source, start=start, end=end, created_at=created_at,
                                      chunk=chunk))
        at = head.index(b'"runs":[]') + len(b'"runs":[')
        out.append((head[:at] + b",".join(parts) + head[at:], len(parts)))
        parts, size, chunk = [], overhead, chunk + 1

    for run in runs:
        encoded = orjson.dumps(run)
        if max_bytes is not None and overhead + len(encoded) + 1 > max_bytes:
            encoded = orjson.dumps({k: v for k, v in run.items() if k not in DATA_FIELDS})
        if len(parts) >= CHUNK_RUNS or (max_bytes is not None and parts and size + len(encoded) + 1 > max_bytes):
            flush()
        parts.append(encoded)
        size += len(encoded) + 1
    flush()
    return out


def bodies(rule_id: str, runs: Sequence[dict[str, Any]], *, source: str, start: dt.datetime, end: dt.datetime,
           created_at: dt.datetime, max_bytes: int | None = None) -> list[bytes]:
    """The raw bodies for `runs`, at most CHUNK_RUNS runs (and `max_bytes` bytes) each."""
    return [body for body, _ in _pack(rule_id, runs, source=source, start=start, end=end, created_at=created_at,
                                      max_bytes=max_bytes, first_chunk=0)]


class Feeder:
    """Feeds one batch (one backfill, one reconciliation pass) as it is read, page by page: each
    `add` enqueues its runs at once, so workers start while the rest is still being listed."""

    def __init__(self, redis: redis_py.Redis, settings: Settings, rule_id: str, *, source: str,
                 start: dt.datetime, end: dt.datetime) -> None:
        if source not in SOURCES:
            raise ValueError(f"lswh_source must be one of {SOURCES}, got {source!r}")
        self.redis, self.settings, self.rule_id = redis, settings, rule_id
        self.source, self.start, self.end = source, start, end
        self.created_at = dt.datetime.now(dt.UTC)
        self.fed: list[tuple[str, int]] = []

    def add(self, runs: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
        """Enqueue `runs` as synthetic deliveries; (delivery id, runs) of each."""
        packed = _pack(self.rule_id, runs, source=self.source, start=self.start, end=self.end,
                       created_at=self.created_at, max_bytes=self.settings.max_body_bytes, first_chunk=len(self.fed))
        fed = [(enqueue(self.redis, self.settings, body, count), count) for body, count in packed]
        self.fed.extend(fed)
        return fed


def feed(redis: redis_py.Redis, settings: Settings, rule_id: str, runs: Sequence[dict[str, Any]], *, source: str,
         start: dt.datetime, end: dt.datetime) -> list[tuple[str, int]]:
    """Enqueue `runs` as synthetic deliveries; (delivery id, runs) of each."""
    return Feeder(redis, settings, rule_id, source=source, start=start, end=end).add(runs)


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
