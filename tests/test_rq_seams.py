"""Where the pipeline leans on RQ beyond its documented API, each seam has a test that fails
when an RQ upgrade moves it: the job hash the ingress writes by hand, the internals the worker
overrides or calls, the failure path of split-off runs, and `lswh worker --burst`.

Every test runs the installed RQ against a real redis-server; workers run in this process
(RQ's SimpleWorker, as `lswh worker` does), so job functions can be defined here.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
import tomllib
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import rq
from packaging.requirements import Requirement
from rq import Queue, Retry, get_current_job
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.worker import SimpleWorker
from rq.worker.base import BaseWorker

from ingress.enqueue import DeliveryQueue
from lswh_core import contract
from lswh_core.redis import async_redis
from lswh_core.settings import Settings
from tests.support.procs import RedisServer, lswh
from tests.support.stack import API_KEY, StandIn
from workers import jobs
from workers.errors import RunError
from workers.worker import PipelineWorker

ROOT = Path(__file__).resolve().parent.parent
DELIVERY = "d" * 32


@pytest.fixture
def db(redis_server: RedisServer) -> redis.Redis:
    client = redis.Redis(port=redis_server.port, db=14)
    client.flushdb()
    return client


@pytest.fixture
def other_db(redis_server: RedisServer) -> redis.Redis:
    client = redis.Redis(port=redis_server.port, db=15)
    client.flushdb()
    return client


def url_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://127.0.0.1:{kwargs['port']}/{kwargs['db']}"


def test_installed_rq_is_inside_the_pinned_minor() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "rq"]
    assert pin.specifier.contains(rq.__version__)
    # One minor only: an upgrade past it has to come through these tests.
    upper = [s for s in pin.specifier if s.operator == "<"]
    assert upper and re.fullmatch(r"\d+\.\d+", upper[0].version)


# --- the job hash the ingress writes by hand ----------------------------------------------------


def lua_enqueue(client: redis.Redis, settings: Settings) -> None:
    async def go() -> None:
        connection = async_redis(url_of(client))
        try:
            await DeliveryQueue(connection, settings).store(b"{}", DELIVERY, 2)
        finally:
            await connection.aclose()

    asyncio.run(go())


def rq_enqueue(client: redis.Redis, settings: Settings, intervals: list[int] | None) -> None:
    lifetimes = contract.job_lifetimes(settings)
    Queue(contract.QUEUE, connection=client).enqueue(
        contract.DELIVERY_JOB,
        DELIVERY,
        job_id=contract.delivery_job_id(DELIVERY),
        description=contract.delivery_job_description(DELIVERY, 2),
        retry=Retry(max=settings.retries, interval=intervals) if settings.retries else None,
        job_timeout=lifetimes["timeout"],
        result_ttl=lifetimes["result_ttl"],
        failure_ttl=lifetimes["failure_ttl"],
    )


# Fields whose values differ by nature, and why:
TIMESTAMPS = {
    b"created_at",  # the moment each was written: ours in the script, RQ's a few ms later
    b"enqueued_at",  # the same moment (RQ sets it while queueing)
}


@pytest.mark.parametrize("retries", [0, 3])
def test_ingress_job_hash_is_field_for_field_what_queue_enqueue_writes(
    db: redis.Redis, other_db: redis.Redis, retries: int
) -> None:
    settings = Settings(redis_url=url_of(db), retries=retries, retry_base_seconds=10, job_timeout=321,
                        failed_keep_days=3)
    lua_enqueue(db, settings)
    job_key = Job.key_for(contract.delivery_job_id(DELIVERY))
    ours: dict[bytes, bytes] = db.hgetall(job_key)  # type: ignore[assignment]
    # Retry intervals carry random jitter: RQ is handed ours, so equal means the same encoding.
    intervals = json.loads(ours[b"retry_intervals"]) if retries else None
    rq_enqueue(other_db, settings, intervals)
    theirs: dict[bytes, bytes] = other_db.hgetall(job_key)  # type: ignore[assignment]

    assert set(ours) == set(theirs), "fields only one side writes"
    for name in sorted(set(theirs) - TIMESTAMPS - {b"data"}):
        assert ours[name] == theirs[name], name
    # The pickled call, compressed at level 0 (ingress.enqueue.zlib_stored) where RQ uses zlib's
    # default: RQ's Job.restore decompresses either to the same bytes.
    assert zlib.decompress(ours[b"data"]) == zlib.decompress(theirs[b"data"])
    for name in TIMESTAMPS:  # same format: RQ's utcformat
        assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ours[name]), name
        assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", theirs[name]), name


def test_ingress_touches_the_same_rq_keys_as_queue_enqueue(db: redis.Redis, other_db: redis.Redis) -> None:
    settings = Settings(redis_url=url_of(db))
    lua_enqueue(db, settings)
    rq_enqueue(other_db, settings, json.loads(db.hget(Job.key_for(contract.delivery_job_id(DELIVERY)),
                                                      "retry_intervals") or b"null"))
    rq_keys = {bytes(k) for k in other_db.keys("*")}
    assert {bytes(k) for k in db.keys("*") if not bytes(k).startswith(contract.KEY_PREFIX.encode())} == rq_keys
    for key in rq_keys:
        kind = other_db.type(key)
        assert db.type(key) == kind, key
        if kind == b"list":
            assert db.lrange(key, 0, -1) == other_db.lrange(key, 0, -1), key
        elif kind == b"set":
            assert db.smembers(key) == other_db.smembers(key), key
        assert (db.ttl(key) == -1) == (other_db.ttl(key) == -1), key


# --- RQ internals the worker overrides or calls ---------------------------------------------------


def parameters(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


@pytest.mark.parametrize(("owner", "name", "expected"), [
    (BaseWorker, "execute_job", ["self", "job", "queue"]),
    (BaseWorker, "prepare_execution", ["self", "job"]),
    (BaseWorker, "maintain_heartbeats", ["self", "job", "execution"]),
    (BaseWorker, "perform_job", ["self", "job", "queue", "execution"]),
    (BaseWorker, "dequeue_job_and_maintain_ttl", ["self", "timeout", "max_idle_time"]),
    (SimpleWorker, "get_heartbeat_ttl", ["self", "job", "working_time"]),
    (BaseWorker, "set_state", ["self", "state", "pipeline"]),
])
def test_worker_internals_we_override_or_call_keep_their_signatures(owner: type, name: str,
                                                                   expected: list[str]) -> None:
    assert parameters(getattr(owner, name)) == expected


def test_rq_work_loop_calls_the_hooks_we_override() -> None:
    """PipelineWorker changes behaviour only through these calls in RQ's own loop."""
    work = inspect.getsource(BaseWorker.work)
    assert "self.execute_job(job, queue)" in work
    assert "self.dequeue_job_and_maintain_ttl(timeout, max_idle_time)" in work
    assert "self.dequeue_timeout" in work
    assert isinstance(inspect.getattr_static(BaseWorker, "dequeue_timeout"), property)
    assert hasattr(BaseWorker, "_stop_requested") or "_stop_requested" in inspect.getsource(BaseWorker.__init__)


def test_record_job_failure_keeps_its_signature() -> None:
    from rq.job_lifecycle import record_job_failure

    assert parameters(record_job_failure) == ["job", "exc_string", "pipeline"]


def heartbeat_advances() -> bool:
    """A job that returns once RQ shows a newer heartbeat for it than at its start: proof that
    our heartbeat thread's maintain_heartbeats reaches the job and its execution."""
    job = get_current_job()
    assert job is not None
    registry = StartedJobRegistry(queue=Queue(job.origin, connection=job.connection))
    assert job.id in registry.get_job_ids()  # prepare_execution put it there
    first = job.connection.hget(job.key, "last_heartbeat")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if job.connection.hget(job.key, "last_heartbeat") != first:
            return True
        time.sleep(0.05)
    return False


def test_pipeline_worker_runs_a_job_with_its_own_heartbeat_thread(db: redis.Redis) -> None:
    queue = Queue(contract.QUEUE, connection=db)
    job = queue.enqueue(heartbeat_advances, job_timeout=60)
    worker = PipelineWorker([queue], connection=db, job_monitoring_interval=1)
    worker.work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.latest_result()
    assert job.return_value() is True
    assert not worker.executions
    assert StartedJobRegistry(queue=queue).get_job_ids() == []


def stretch_the_retry_then_fail() -> None:
    """What workers.jobs._wait_at_least does for a long Retry-After: RQ must read the job
    object's intervals when it schedules the retry."""
    job = get_current_job()
    assert job is not None
    jobs._wait_at_least(job, 500)
    raise RuntimeError("transient, retry later")


def test_rq_schedules_a_retry_from_the_running_jobs_retry_intervals(db: redis.Redis) -> None:
    queue = Queue(contract.QUEUE, connection=db)
    job = queue.enqueue(stretch_the_retry_then_fail, retry=Retry(max=2, interval=[1, 1]))
    PipelineWorker([queue], connection=db, job_monitoring_interval=1).work(burst=True)
    registry = ScheduledJobRegistry(queue=queue)
    assert registry.get_job_ids() == [job.id]
    due_in = registry.get_expiration_time(job).timestamp() - time.time()  # type: ignore[attr-defined]
    assert 490 < due_in <= 502


def test_split_off_run_sits_alone_in_the_failed_registry_and_requeues_as_a_run_job(db: redis.Redis) -> None:
    """split_off writes failed jobs through rq.job_lifecycle.record_job_failure (no worker)."""
    runtime = SimpleNamespace(redis=db, settings=Settings(redis_url=url_of(db), failed_keep_days=3))
    run = {"id": "run-1", "session_id": "project-1", "start_time": "2024-04-05T01:28:54+00:00"}
    jobs.split_off(runtime, DELIVERY, "rule-1",  # type: ignore[arg-type]
                   {"run-1": RunError("writing: LangSmith answered 400", transient=False)}, {"run-1": run})
    queue = Queue(contract.QUEUE, connection=db)
    registry = FailedJobRegistry(queue=queue)
    job_id = contract.run_job_id(DELIVERY, "run-1")
    assert registry.get_job_ids() == [job_id]
    job = Job.fetch(job_id, connection=db)
    assert job.get_status() == JobStatus.FAILED
    result = job.latest_result()
    assert result is not None
    assert (result.exc_string or "").strip().endswith("run run-1: writing: LangSmith answered 400")
    assert 2 * 86_400 < db.ttl(job.key) <= 3 * 86_400
    # ids and where to find the run again (project, start time): never a URL or a secret
    assert (job.func_name, job.args) == (contract.RUN_JOB, (DELIVERY, "run-1", "rule-1", "project-1",
                                                             "2024-04-05T01:28:54+00:00"))
    registry.requeue(job_id)
    assert queue.get_job_ids() == [job_id]


# --- lswh worker --burst --------------------------------------------------------------------------


def registered_workers(client: redis.Redis) -> set[bytes]:
    """Every worker registered in the last minute: RQ keeps a dead worker's hash 60 s."""
    return {bytes(k) for k in client.keys("rq:worker:*") if client.type(k) == b"hash" and client.hexists(k, "birth")}


def fail_the_first_time() -> str:
    """Fails on its first attempt (RQ schedules the retry), succeeds on the second."""
    job = get_current_job()
    assert job is not None
    if job.connection.incr(f"attempts:{job.id}") == 1:
        raise RuntimeError("transient, retry later")
    return "done"


def test_burst_waits_for_a_scheduled_retry_as_one_worker_then_exits(db: redis.Redis, standin: StandIn) -> None:
    queue = Queue(contract.QUEUE, connection=db)
    job = queue.enqueue(fail_the_first_time, retry=Retry(max=1, interval=4))
    env = {"REDIS_URL": url_of(db), "LANGSMITH_ENDPOINT": standin.url, "LANGSMITH_API_KEY": API_KEY,
           "PYTHONPATH": str(ROOT)}  # so the worker can import this module's job function
    worker = lswh("worker", "--burst", env=env, name="worker-burst")
    try:
        assert worker.popen.wait(60) == 0, worker.output()
    finally:
        worker.stop()
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, worker.output()
    assert db.get(f"attempts:{job.id}") == b"2"
    # Waiting 4 s for the retry, RQ's own burst loop registered a new worker every 0.5 s.
    assert len(registered_workers(db)) == 1, worker.output()


def test_queue_metrics_read_the_keys_rq_writes(db: redis.Redis) -> None:
    # ingress/metrics.py reads RQ's queue, registries, worker set and job hashes at scrape time,
    # with key names taken from RQ's classes; these are the keys the installed RQ really writes.
    from rq.worker import WorkerStatus

    from ingress.metrics import FAILED_KEY, QUEUE_KEY, SCHEDULED_KEY, STARTED_KEY, WORKERS_KEY, _age
    from lswh_core import metrics as m

    queue = Queue(contract.QUEUE, connection=db)
    assert (QUEUE_KEY, SCHEDULED_KEY, STARTED_KEY, FAILED_KEY) == (
        queue.key, ScheduledJobRegistry(queue=queue).key, StartedJobRegistry(queue=queue).key,
        FailedJobRegistry(queue=queue).key)
    job = queue.enqueue_call(contract.DELIVERY_JOB, args=("0" * 32,))
    assert db.lindex(QUEUE_KEY, 0) == job.id.encode()
    # The oldest job's age is read from its enqueued_at, in the format RQ writes it.
    enqueued_at = db.hget(Job.redis_job_namespace_prefix.encode() + job.id.encode(), "enqueued_at")
    assert 0 <= _age(enqueued_at, time.time()) < 60
    worker = SimpleWorker([queue], connection=db)
    worker.register_birth()
    try:
        assert db.sismember(WORKERS_KEY, worker.key)
        worker.set_state(WorkerStatus.IDLE)
        assert db.hget(worker.key, "state") == b"idle"
        # Every state RQ names has its gauge series (ours adds the worker's own waiting_info).
        assert {status.value for status in WorkerStatus} <= set(m.WORKER_STATES)
    finally:
        worker.register_death()


def test_status_reads_a_jobs_description_where_rq_keeps_it(db: redis.Redis) -> None:
    # lswh/status.py falls back to the delivery job's description once the stored body expired.
    from lswh.status import delivery_account

    delivery_id = "d" * 32
    job = Queue(contract.QUEUE, connection=db).enqueue_call(
        contract.DELIVERY_JOB, args=(delivery_id,), job_id=contract.delivery_job_id(delivery_id),
        description=contract.delivery_job_description(delivery_id, 3))
    assert db.hget(Job.key_for(job.id), "description") == job.description.encode()
    account = delivery_account(db, delivery_id)
    assert account is not None
    assert account.received == 3
