"""`lswh worker`: an RQ worker on the pipeline's queue, scheduler on (so retries run).

SimpleWorker runs jobs in this process instead of forking one per job (RQ forks ~50 jobs/s
here), so HTTP pools stay warm. Because no parent process watches the job, a thread keeps
the job's heartbeat while it runs; with a short heartbeat TTL and frequent maintenance, a
worker killed mid-job has its job retried by any other worker within about two minutes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from langsmith import utils as ls_utils
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.logutils import setup_loghandlers
from rq.queue import Queue as RQQueue
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from lswh_core import contract
from lswh_core.redact import install_log_redaction
from lswh_core.redis import sync_redis
from lswh_core.settings import Settings, SettingsError

log = logging.getLogger("lswh.worker")

HEARTBEAT_SECONDS = 10  # started-registry entries then expire ~70 s after a worker dies
MAINTENANCE_SECONDS = 30  # how often some worker looks for abandoned jobs


class PipelineWorker(SimpleWorker):
    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker would use the whole job timeout (+60 s): a dead worker's job would sit
        # "started" for 11 minutes. The base rule (monitoring interval + 60 s) needs heartbeats.
        return int(super(SimpleWorker, self).get_heartbeat_ttl(job, working_time))

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
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            thread.join()
        self.set_state("idle")


def check_api_key() -> str | None:
    """None when LangSmith accepts the key (or cannot be reached now: retries handle that)."""
    from workers.client import make_client

    try:
        next(iter(make_client().list_datasets(limit=1)), None)
    except ls_utils.LangSmithAuthError:
        return "LangSmith rejected LANGSMITH_API_KEY: check the key and LANGSMITH_ENDPOINT"
    except ls_utils.LangSmithUserError as exc:
        return f"LangSmith client is not configured: {str(exc).splitlines()[0]}"
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
    setup_loghandlers("INFO")
    install_log_redaction()
    problem = check_api_key()
    if problem:
        print(f"lswh worker: {problem}", file=sys.stderr)
        return 2
    connection = sync_redis(settings.redis_url)
    queue = Queue(contract.QUEUE, connection=connection)

    def make_worker() -> PipelineWorker:
        return PipelineWorker([queue], connection=connection, job_monitoring_interval=HEARTBEAT_SECONDS,
                              maintenance_interval=MAINTENANCE_SECONDS)

    if not burst:
        make_worker().work(with_scheduler=True, logging_level="INFO")
        return 0
    # RQ's burst stops at an empty queue; ours also waits out scheduled retries and jobs other
    # workers are running (SPEC: --burst).
    while True:
        make_worker().work(burst=True, with_scheduler=True, logging_level="INFO")
        if _idle(queue):
            return 0
        time.sleep(0.5)
