"""Store a delivery and its RQ job in one atomic Redis round trip.

RQ's own `Queue.enqueue` costs several round trips and a threadpool hop per request. Here one
Lua script stores the raw body (SET NX: its existence is the duplicate check), writes the job
hash exactly as RQ would, and pushes the job id onto the queue. So a 202 means both "stored"
and "a worker will run it", and a duplicate body stores nothing at all.
"""

from __future__ import annotations

import json
import pickle
import random
import zlib
from dataclasses import dataclass

import redis.asyncio
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.utils import now, utcformat

from lswh_core import contract
from lswh_core.settings import Settings

_ENQUEUE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('HSET', KEYS[2], unpack(ARGV, 4))
  redis.call('RPUSH', KEYS[3], ARGV[3])
  redis.call('SADD', KEYS[4], KEYS[3])
  return 1
end
return 0
"""

# Finished delivery jobs stay visible in the dashboard for a day, then expire.
FINISHED_JOB_TTL = 86_400
_RNG = random.Random()


@dataclass(frozen=True)
class Stored:
    delivery_id: str
    duplicate: bool


class DeliveryQueue:
    """Builds RQ job hashes from a template that RQ itself produced at start-up, so the
    fields stay those of the installed RQ; per request only ids, times and jitter change."""

    def __init__(self, connection: redis.asyncio.Redis, settings: Settings) -> None:
        self._settings = settings
        self._script = connection.register_script(_ENQUEUE)
        queue = Queue(contract.QUEUE, connection=_unconnected())
        self._queue_key = queue.key
        self._queues_key = queue.redis_queues_keys
        template = Job.create(
            contract.DELIVERY_JOB,
            args=("0" * 32,),
            connection=queue.connection,
            id=contract.delivery_job_id("0" * 32),
            timeout=settings.job_timeout,
            result_ttl=FINISHED_JOB_TTL,
            failure_ttl=settings.failed_keep_seconds,
            description="",
            retry=Retry(max=settings.retries, interval=1) if settings.retries else None,
            origin=queue.name,
        )
        template.enqueued_at = now()
        template._status = JobStatus.QUEUED  # what Queue._prepare_for_queue sets
        self._template = {k: v for k, v in template.to_dict().items() if v is not None}
        self._pickle_protocol = pickle.HIGHEST_PROTOCOL

    def _job_fields(self, delivery_id: str, runs: int) -> list[bytes | str | int]:
        stamp = utcformat(now())
        fields = dict(self._template)
        fields["created_at"] = stamp
        fields["enqueued_at"] = stamp
        fields["description"] = contract.delivery_job_description(delivery_id, runs)
        fields["data"] = zlib.compress(
            pickle.dumps((contract.DELIVERY_JOB, None, (delivery_id,), {}), protocol=self._pickle_protocol)
        )
        if self._settings.retries:
            intervals = contract.retry_intervals(self._settings.retries, self._settings.retry_base_seconds,
                                                 _RNG)
            fields["retry_intervals"] = json.dumps(intervals)
        flat: list[bytes | str | int] = []
        for key, value in fields.items():
            flat.append(key)
            flat.append(value if isinstance(value, bytes | str) else str(value))
        return flat

    async def store(self, body: bytes, delivery_id: str, runs: int) -> Stored:
        job_id = contract.delivery_job_id(delivery_id)
        created = await self._script(
            keys=[contract.delivery_key(delivery_id), Job.key_for(job_id), self._queue_key, self._queues_key],
            args=[body, self._settings.keep_seconds, job_id, *self._job_fields(delivery_id, runs)],
        )
        return Stored(delivery_id=delivery_id, duplicate=not created)


def _unconnected():  # type: ignore[no-untyped-def]
    """A sync client RQ can hold while building the template; it never connects."""
    import redis as sync_redis

    return sync_redis.Redis()
