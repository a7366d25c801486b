"""`lswh worker`: an RQ worker on the pipeline's queue, scheduler on (so retries run).

SimpleWorker runs jobs in this process instead of forking one per job (RQ forks ~50 jobs/s
here), so HTTP pools stay warm. Because no parent process watches the job, a thread keeps
the job's heartbeat while it runs.

A worker killed mid-job (SIGKILL, OOM) leaves its job in the started registry until the
heartbeat TTL runs out; the next maintenance of any worker (a new one runs it at start) then
retries it. RQ's defaults make that up to ~20 minutes: a 7-minute blocking dequeue between
maintenances, a heartbeat TTL of the whole job timeout. Here a dead worker's job expires within
HEARTBEAT_TTL_SECONDS, some worker looks every MAINTENANCE_SECONDS, and the retry is enqueued by
RQ's scheduler, whose lock a dead worker holds for up to 61 s: recovered in about 70 s
(tests/test_reliability.py measures it). A heartbeat lost for longer than the TTL (Redis
unreachable) may run a job twice; example writes are idempotent, so that costs time only.

Before its first job a worker reads LangSmith's `/info` (the query backend and the examples path
depend on it). While it cannot, the worker takes no jobs: it stays registered with state
`waiting_info`, keeps its heartbeat and maintenance (it is waiting, not dead: nothing should
restart it), asks again every INFO_RETRY_SECONDS and says so in the log once a minute. Once
running, it reads `/info` again every INFO_REFRESH_SECONDS: an upgraded self-hosted server changes
its flags.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING

import redis
from langsmith import utils as ls_utils
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.queue import Queue as RQQueue
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from lswh_core import contract, egress
from lswh_core.logs import log_context, setup_logging
from lswh_core.redis import sync_redis
from lswh_core.settings import Settings, SettingsError

if TYPE_CHECKING:
    from workers.langsmith.door import LangSmith

log = logging.getLogger("lswh.worker")

HEARTBEAT_SECONDS = 5
# `--burst` looks this often whether anything is left to wait for (3 Redis reads).
DRAIN_POLL_SECONDS = 1
HEARTBEAT_TTL_SECONDS = 20  # four missed beats: the worker is gone
MAINTENANCE_SECONDS = 10  # how often each worker offers to look for abandoned jobs (one does)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
INFO_RETRY_SECONDS = 5  # a waiting worker asks /info this often (each ask retries 5xx twice)
INFO_LOG_SECONDS = 60  # a waiting worker says so this often
INFO_REFRESH_SECONDS = 600  # a running worker reads /info again this often


class PipelineWorker(SimpleWorker):
    # `lswh worker --burst`: work like a long-running worker (scheduler process on, so retries
    # scheduled minutes away are enqueued when due), and leave once nothing is left to wait for.
    drain: bool = False
    # The settings when LSWH_RECONCILE_EVERY is set: each maintenance tick then offers its period's pass.
    reconcile_settings: Settings | None = None

    # `lswh worker` takes no job before LangSmith's /info is read (on for it in `main`; a worker
    # made for other jobs, e.g. RQ's own tests of these seams, needs no LangSmith).
    needs_info: bool = False
    # time.monotonic() of the last periodic /info read tried (a failed one is not retried every tick).
    _info_tried: float = 0.0

    def dequeue_job_and_maintain_ttl(self, timeout: int | None,
                                     max_idle_time: int | None = None) -> tuple[Job, RQQueue] | None:
        if self.needs_info and not self._await_info():
            return None
        if not self.drain:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while not self._stop_requested:
            # RQ gives up after max_idle_time of blocking dequeue: the worker stays registered
            # and its scheduler running between looks (RQ's own burst would quit and, called
            # again, build and register a new worker each time).
            found = super().dequeue_job_and_maintain_ttl(DRAIN_POLL_SECONDS, DRAIN_POLL_SECONDS)
            if found is not None or _idle(self.queues[0]):
                return found
        return None

    def _await_info(self) -> bool:
        """True once `/info` is known (re-read when due); False if asked to stop while waiting."""
        from workers.errors import InfoUnknown
        from workers.runtime import get_runtime

        langsmith = get_runtime().langsmith
        age = langsmith.info_age()
        if age is not None:
            if age >= INFO_REFRESH_SECONDS and time.monotonic() - self._info_tried >= INFO_REFRESH_SECONDS / 10:
                self._info_tried = time.monotonic()
                try:
                    langsmith.refresh_info()
                except InfoUnknown as exc:  # the answer read before stays: it was read, not guessed
                    log.warning("%s; keeping the answer read %.0f s ago", exc, age)
            return True
        return self._wait_for_info(langsmith)

    def _wait_for_info(self, langsmith: LangSmith) -> bool:
        from workers.bookkeeping import metrics
        from workers.errors import InfoUnknown
        from workers.langsmith.door import QueryBackend

        started = time.monotonic()
        said = -float(INFO_LOG_SECONDS)
        self.set_state(contract.WORKER_WAITING_INFO)
        metrics.set_info_waiting(True)
        try:
            while not self._stop_requested:
                if self.drain and self._nothing_left():
                    return False  # `--burst` with nothing left to do leaves, /info or not
                try:
                    info = langsmith.refresh_info()
                except InfoUnknown as exc:
                    waited = time.monotonic() - started
                    if waited - said >= INFO_LOG_SECONDS:
                        said = waited
                        log.warning("waiting for LangSmith /info, taking no jobs (%.0f s so far): %s", waited, exc)
                else:
                    log.info("LangSmith /info read: version %r, run queries %s; taking jobs",
                             info.version, QueryBackend.of(info.instance_flags).value)
                    return True
                self._pause_waiting(INFO_RETRY_SECONDS)
            return False
        finally:
            metrics.set_info_waiting(False)

    def _nothing_left(self) -> bool:
        try:
            return _idle(self.queues[0])
        except REDIS_ERRORS:
            return False

    def _pause_waiting(self, seconds: float) -> None:
        """Heartbeat and maintenance go on while waiting: the worker stays alive to `lswh status`,
        liveness checks and the other workers (its abandoned-job checks keep running)."""
        try:
            self.heartbeat()
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
        except REDIS_ERRORS:
            log.warning("Redis unreachable while waiting for LangSmith /info; trying again")
        deadline = time.monotonic() + seconds
        while not self._stop_requested and time.monotonic() < deadline:
            time.sleep(0.2)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker would use the whole job timeout (+60 s), RQ's base rule the monitoring
        # interval + 60 s: a dead worker's job would sit "started" for 11 or 1 minutes.
        return HEARTBEAT_TTL_SECONDS

    @property
    def dequeue_timeout(self) -> int:
        # Maintenance runs between blocking dequeues: RQ's 405 s would make an idle worker look
        # for abandoned jobs only every 7 minutes, whatever maintenance_interval says.
        return max(1, min(MAINTENANCE_SECONDS, int(self.maintenance_interval)))

    def run_maintenance_tasks(self) -> None:
        # RQ leaves this unannotated, and untyped_calls_exclude does not reach calls through super().
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        if self.reconcile_settings is None:
            return
        from workers.reconcile import offer_pass

        try:
            job_id = offer_pass(self.connection, self.reconcile_settings)
        except REDIS_ERRORS:  # the next tick offers again; the worker's own loop handles Redis
            log.warning("could not offer the reconciliation pass: Redis unreachable")
            return
        if job_id:
            log.info("enqueued reconciliation pass %s", job_id)

    def execute_job(self, job: Job, queue: RQQueue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.job_monitoring_interval):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception:  # a missed beat is retried; the job must not die for it
                    log.warning("heartbeat for job %s failed", job.id, exc_info=True)

        thread = threading.Thread(target=beat, name="lswh-heartbeat", daemon=True)
        thread.start()
        lost_redis = False
        try:
            with log_context(**job_log_fields(job)):
                self.perform_job(job, queue, execution)
        except REDIS_ERRORS:
            lost_redis = True
        finally:
            stop.set()
            thread.join()
        if lost_redis:
            # Redis went away while RQ recorded how the job ended; RQ would let the worker die.
            # Wait for it instead: the job, still "started" and no longer heartbeating, is then
            # retried as abandoned (runs already done are skipped, the rest written idempotently).
            log.warning("Redis unreachable while finishing job %s; waiting, it will be retried", job.id)
            self.executions.pop(execution.id, None)
            self._wait_for_redis()
        self.set_state("idle")

    def _wait_for_redis(self) -> None:
        delay = 0.5
        while not self._stop_requested:
            try:
                self.connection.ping()
                return
            except REDIS_ERRORS:
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


def job_log_fields(job: Job) -> dict[str, str | None]:
    """Every line logged while a job runs (RQ's included) names its delivery, and run if one:
    both job functions take the delivery id first, a run job the run id second."""
    try:
        args = job.args
    except Exception:  # a job whose arguments cannot be read still runs, and logs without them
        return {"job_id": job.id}
    fields: dict[str, str | None] = {"job_id": job.id}
    if job.func_name in (contract.DELIVERY_JOB, contract.RUN_JOB, contract.THREAD_JOB) and args:
        fields["delivery_id"] = str(args[0])
        if job.func_name == contract.RUN_JOB and len(args) > 1:
            fields["run_id"] = str(args[1])
    return fields


WORKSPACE_REFUSED = (
    "LangSmith refused the API key for this workspace (403). An organization-scoped service key needs "
    "LANGSMITH_WORKSPACE_ID (the workspace's id, sent as X-Tenant-Id); if it is set, the key may not use "
    "that workspace")


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK error (it raises its own errors from requests' HTTPError)."""
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:  # a chain may loop back on itself
        visited.add(id(seen))
        response = getattr(seen, "response", None)
        if response is not None and getattr(response, "status_code", None) is not None:
            return int(response.status_code)
        seen = seen.__cause__ or seen.__context__
    return None


def check_api_key() -> str | None:
    """None when LangSmith accepts the key (or cannot be reached now: retries handle that)."""
    from workers.runtime import get_runtime

    langsmith = get_runtime().langsmith
    log.info("%s", langsmith.config.describe())
    try:
        langsmith.check_key()
    except ls_utils.LangSmithAuthError:
        return "LangSmith rejected LANGSMITH_API_KEY: check the key and LANGSMITH_ENDPOINT"
    except ls_utils.LangSmithUserError as exc:
        if "org-scoped" in str(exc):  # the SDK's reading of error "org_scoped_key_requires_workspace"
            return WORKSPACE_REFUSED
        return f"LangSmith client is not configured: {str(exc).splitlines()[0]}"
    except ls_utils.LangSmithError as exc:
        if _status_of(exc) == 403:
            return WORKSPACE_REFUSED
        log.warning("could not check the LangSmith API key now (%s); starting anyway", type(exc).__name__)
    except Exception as exc:
        log.warning("could not check the LangSmith API key now (%s); starting anyway", type(exc).__name__)
    return None


def _idle(queue: Queue) -> bool:
    return (queue.count == 0 and ScheduledJobRegistry(queue=queue).count == 0
            and StartedJobRegistry(queue=queue).count == 0)


def main(burst: bool = False) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"lswh worker: {exc}", file=sys.stderr)
        return 2
    try:
        egress.check()
    except SettingsError as exc:
        print(f"lswh worker: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format)
    problem = check_api_key()
    if problem:
        print(f"lswh worker: {problem}", file=sys.stderr)
        return 2
    from workers.bookkeeping.metrics import serve
    from workers.runtime import get_runtime

    get_runtime().warm_up()
    serve(settings.metrics_port)
    connection = sync_redis(settings.redis_url)
    queue = Queue(contract.QUEUE, connection=connection)

    from workers.jobs import on_job_exception

    # A reconciliation period shorter than the maintenance tick would skip periods.
    maintenance = min(MAINTENANCE_SECONDS, max(1, int(settings.reconcile_every or MAINTENANCE_SECONDS)))
    worker = PipelineWorker([queue], connection=connection, job_monitoring_interval=HEARTBEAT_SECONDS,
                            maintenance_interval=maintenance, exception_handlers=[on_job_exception])
    worker.reconcile_settings = settings if settings.reconcile_every else None
    # RQ's burst stops at an empty queue; ours also waits out scheduled retries and jobs other
    # workers are running (docs/operations.md: --burst), as one worker that stays registered throughout.
    worker.drain = burst
    worker.needs_info = True
    worker.work(with_scheduler=True, logging_level="INFO")
    return 0
