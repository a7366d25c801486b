"""Synthetic deliveries: runs found through the API (backfill, reconciliation) fed to the same job
path as a webhook delivery.

A synthetic body has the webhook payload's shape, `{"rule_id", "start_time", "end_time", "runs"}`,
with each run its locator (reconciliation: the job path reads inputs and outputs in bulk through the
API) or its locator with the inputs and outputs the backfill already read (then the job path takes
them inline, as from a webhook, and reads nothing twice), plus `lswh_source` (backfill or reconcile)
and `lswh_created_at`. The latter makes each batch its own delivery: a second backfill of the same
window is processed (and counted) again instead of being taken for a duplicate of the first, and
examples stay single because their ids are derived from dataset and run id. A body stays within
LSWH_MAX_BODY_BYTES, the ingress's limit for a webhook, so a worker holds a synthetic delivery's
body as it would hold a webhook's; a run whose data alone would not fit travels as its locator,
and the job path reads it through the API. It is stored like the ingress stores a body (raw body for
LSWH_REPLAY_DAYS, duplicate check for LSWH_KEEP_DAYS) and its job is created like the ingress's.
"""

from __future__ import annotations

import datetime as dt
import functools
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


class Packer:
    """Cuts runs, one at a time, into bodies of at most CHUNK_RUNS runs and `max_bytes` bytes.
    Only the runs of the body being filled are held (as the dicts pushed, not encoded: orjson's
    output buffer for a large run is several times its size); each is measured when pushed and
    the body is encoded once, when closed. A run that could not fit even alone loses its inputs
    and outputs (the job path reads them through the API)."""

    def __init__(self, rule_id: str, *, source: str, start: dt.datetime, end: dt.datetime, created_at: dt.datetime,
                 max_bytes: int | None = None) -> None:
        if source not in SOURCES:
            raise ValueError(f"lswh_source must be one of {SOURCES}, got {source!r}")
        self._head = functools.partial(_envelope, rule_id, source=source, start=start, end=end,
                                       created_at=created_at)
        self.max_bytes = max_bytes
        self.chunk = 0
        # The envelope's size with a chunk number of generous width; each run adds a comma.
        self._overhead = len(orjson.dumps(self._head(chunk=10**9)))
        self._runs: list[dict[str, Any]] = []
        self._size = self._overhead

    def push(self, run: dict[str, Any]) -> tuple[bytes, int] | None:
        """Add a run; the body it closed (runs before it), if adding it closed one."""
        size = len(orjson.dumps(run))
        limit = self.max_bytes
        if limit is not None and self._overhead + size + 1 > limit:
            run = {k: v for k, v in run.items() if k not in DATA_FIELDS}
            size = len(orjson.dumps(run))
        closed = None
        if len(self._runs) >= CHUNK_RUNS or (limit is not None and self._runs and self._size + size + 1 > limit):
            closed = self.finish()
        self._runs.append(run)
        self._size += size + 1
        return closed

    def finish(self) -> tuple[bytes, int] | None:
        """The body being filled, closed (None when empty): (body, runs in it)."""
        if not self._runs:
            return None
        body = orjson.dumps({**self._head(chunk=self.chunk), "runs": self._runs})
        count = len(self._runs)
        self._runs, self._size, self.chunk = [], self._overhead, self.chunk + 1
        return body, count


class Feeder:
    """Feeds one batch (one backfill, one reconciliation pass) as it is read: `push` each run
    (no I/O), `send` each body it closes, `finish` at the end. Workers start on the first bodies
    while the rest is still being listed, and only the body being filled is held."""

    def __init__(self, redis: redis_py.Redis, settings: Settings, rule_id: str, *, source: str,
                 start: dt.datetime, end: dt.datetime) -> None:
        self.redis, self.settings = redis, settings
        self.packer = Packer(rule_id, source=source, start=start, end=end, created_at=dt.datetime.now(dt.UTC),
                             max_bytes=settings.max_body_bytes)
        self.fed: list[tuple[str, int]] = []

    def push(self, run: dict[str, Any]) -> tuple[bytes, int] | None:
        return self.packer.push(run)

    def send(self, closed: tuple[bytes, int] | None) -> int:
        """Store and enqueue a closed body; the runs it carries (0 for None)."""
        if closed is None:
            return 0
        body, count = closed
        self.fed.append((enqueue(self.redis, self.settings, body, count), count))
        return count

    def finish(self) -> int:
        return self.send(self.packer.finish())

    def add(self, runs: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
        """Enqueue `runs` and close the body: (delivery id, runs) of each delivery made."""
        first = len(self.fed)
        for run in runs:
            self.send(self.push(run))
        self.finish()
        return self.fed[first:]


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
