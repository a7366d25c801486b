"""Store a delivery and its RQ job in one atomic Redis round trip.

RQ's own `Queue.enqueue` costs several round trips and a threadpool hop per request. Here one
Lua script marks the body's hash as seen (SET NX: its existence is the duplicate check), stores
the raw body, writes the job hash as RQ would (field for field; the job's data is compressed
at level 0, which RQ reads back the same), and pushes the job id onto the queue. So
a 202 means both "stored" and "a worker will run it", and a duplicate body stores nothing.

Retention is split (docs/production.md, "Redis: sizing"): duplicates need only the hash, kept LSWH_KEEP_DAYS;
the raw body, most of the memory, is kept LSWH_REPLAY_DAYS.

Deliveries stored in the same turn of the event loop share one round trip (ingress.autopipeline).
"""

from __future__ import annotations

import asyncio
import pickle
import random
import time
import zlib
from dataclasses import dataclass

import redis.asyncio
from redis.exceptions import NoScriptError
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.utils import now

from ingress.autopipeline import AutoPipeline
from lswh_core import contract
from lswh_core.settings import Settings

# LangSmith gives up after 5 s: a store slower than this is answered 503 so it retries in time.
ENQUEUE_BUDGET_SECONDS = 2.0
# A body this large goes to Redis in a round trip of its own, not holding up the small ones.
ALONE_BYTES = 64 * 1024

# The job hash fields that vary per delivery travel as arguments; the rest are baked into the
# script at start-up (see _script_for), so a request sends only what is new.
_ENQUEUE = """
local constants = {%s}
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('SET', KEYS[5], ARGV[1], 'EX', ARGV[3])
  redis.call('HSET', KEYS[2], 'created_at', ARGV[5], 'enqueued_at', ARGV[5], 'description', ARGV[6],
             'data', ARGV[7], unpack(constants))
  if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[2], 'retry_intervals', ARGV[8])
  end
  redis.call('RPUSH', KEYS[3], ARGV[4])
  redis.call('SADD', KEYS[4], KEYS[3])
  return 1
end
return 0
"""
_PER_DELIVERY = ("created_at", "enqueued_at", "description", "data", "retry_intervals")


def _lua_string(value: str) -> str:
    if not value.isascii() or any(c in value for c in "\\\"\n\r"):
        raise ValueError(f"job field value not safe to bake into Lua: {value!r}")
    return f'"{value}"'


def _script_for(template: dict[str, object]) -> str:
    pairs = []
    for key, value in template.items():
        if key in _PER_DELIVERY or value is None:
            continue
        text = value.decode() if isinstance(value, bytes) else str(getattr(value, "value", value))
        pairs += [_lua_string(key), _lua_string(text)]
    return _ENQUEUE % ", ".join(pairs)


_RNG = random.Random()


def zlib_stored(data: bytes) -> bytes:
    """`zlib.compress(data, 0)`, byte for byte (tests/test_enqueue.py), without deflate's set-up:
    zlib.compress cost ~34 us a call here at any level (it allocates and clears its window and
    hash tables every time), a third of the ingress's CPU per delivery; this costs ~0.3 us. One
    stored block: a zlib header, the block's length and its complement, the bytes, their Adler-32
    (RFC 1950/1951). RQ reads a job's data with zlib.decompress (rq.job.Job.restore)."""
    size = len(data)
    if size > 16_384:  # a job's pickle is ~100 bytes; zlib splits longer data into several blocks
        return zlib.compress(data, 0)
    return (b"\x78\x01\x01" + size.to_bytes(2, "little") + (size ^ 0xFFFF).to_bytes(2, "little") + data
            + zlib.adler32(data).to_bytes(4, "big"))


@dataclass(frozen=True)
class Stored:
    delivery_id: str
    duplicate: bool


class DeliveryQueue:
    """Builds RQ job hashes from a template that RQ itself produced at start-up, so the
    fields stay those of the installed RQ; per request only ids, times and jitter change."""

    def __init__(self, connection: redis.asyncio.Redis, settings: Settings) -> None:
        self._settings = settings
        queue = Queue(contract.QUEUE, connection=_unconnected())
        self._queue_key = queue.key
        self._queues_key = queue.redis_queues_keys
        template = Job.create(
            contract.DELIVERY_JOB,
            args=("0" * 32,),
            connection=queue.connection,
            id=contract.delivery_job_id("0" * 32),
            **contract.job_lifetimes(settings),
            description="",
            retry=Retry(max=settings.retries, interval=1) if settings.retries else None,
            origin=queue.name,
        )
        template.enqueued_at = now()
        template._status = JobStatus.QUEUED  # what Queue._prepare_for_queue sets
        self._client = connection
        self._script = connection.register_script(_script_for(template.to_dict()))
        self._pipeline = AutoPipeline(connection, ENQUEUE_BUDGET_SECONDS)
        self._pickle_protocol = pickle.HIGHEST_PROTOCOL
        self._second, self._second_text = -1, ""

    def _timestamp(self) -> str:
        """rq.utils.utcformat(rq.utils.now()) (`%Y-%m-%dT%H:%M:%S.%fZ`, UTC), with strftime run
        once a second, not once a delivery."""
        moment = time.time()
        second = int(moment)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((moment - second) * 1_000_000):06d}Z"

    def _job_fields(self, delivery_id: str, runs: int) -> list[bytes | str]:
        """created_at, description, data, retry_intervals: in the script's ARGV order."""
        data = zlib_stored(
            pickle.dumps((contract.DELIVERY_JOB, None, (delivery_id,), {}), protocol=self._pickle_protocol))
        intervals = ""
        if self._settings.retries:
            # A list of ints: its repr is json.dumps's text (what RQ writes), at a sixth of the cost.
            intervals = repr(contract.retry_intervals(self._settings.retries, self._settings.retry_base_seconds, _RNG))
        return [self._timestamp(), contract.delivery_job_description(delivery_id, runs), data, intervals]

    async def store(self, body: bytes, delivery_id: str, runs: int, *, keep_long: bool = False) -> Stored:
        """Within ENQUEUE_BUDGET_SECONDS (and the end of the current loop turn), or TimeoutError
        (or a RedisError, OSError): the batch it travels in is bounded, so the caller need not
        start a timer of its own per delivery. `keep_long` keeps the body as long as a failed job
        (LSWH_FAILED_KEEP_DAYS) when that is longer than LSWH_REPLAY_DAYS."""
        settings = self._settings
        body_seconds = max(settings.replay_seconds, settings.failed_keep_seconds) if keep_long \
            else settings.replay_seconds
        job_id = contract.delivery_job_id(delivery_id)
        command = ("EVALSHA", self._script.sha, 5,
                   contract.seen_key(delivery_id), Job.key_for(job_id), self._queue_key, self._queues_key,
                   contract.delivery_key(delivery_id),
                   body, settings.keep_seconds, body_seconds, job_id,
                   *self._job_fields(delivery_id, runs))
        alone = len(body) > ALONE_BYTES
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            created = await self._pipeline.execute(*command, alone=alone)
        except NoScriptError:  # a restarted or flushed Redis: load it, then run it (EVALSHA ran nothing)
            async with asyncio.timeout_at(started + ENQUEUE_BUDGET_SECONDS):
                await self._client.script_load(self._script.script)
                created = await self._pipeline.execute(*command, alone=alone)
        return Stored(delivery_id=delivery_id, duplicate=not created)

    async def aclose(self) -> None:
        await self._pipeline.aclose()


def _unconnected() -> redis.Redis:
    """A sync client RQ can hold while building the template; it never connects."""
    import redis as sync_redis

    return sync_redis.Redis()
