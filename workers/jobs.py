"""The RQ job functions (named by dotted path in lswh_core.contract).

One job per delivery processes its runs in bulk. Runs that fail transiently make the job
retry (RQ Retry, backoff with jitter) while the runs already written are remembered and not
redone. A run that fails permanently, or still fails on the last attempt, is split off into
a failed job of its own, so the delivery job never fails because of one run.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Iterable
from typing import Any

import orjson
from rq import Queue, get_current_job
from rq.job import Job
from rq.job_lifecycle import record_job_failure
from rq.utils import now

from lswh_core import contract
from lswh_core.redact import redact
from workers.errors import RunError
from workers.process import process_runs
from workers.runtime import Runtime, get_runtime

log = logging.getLogger("lswh.jobs")


class RunFailed(Exception):
    """Its text ends with `run <run id>: <reason>` (what rq-dashboard shows)."""


class RunsPending(Exception):
    """Some runs failed transiently: RQ retries the delivery job for those runs only."""


class DeliveryFailed(Exception):
    """The delivery as a whole could not be processed (e.g. its raw body is gone)."""


def process_delivery(delivery_id: str) -> str:
    return _guarded(_process_delivery, delivery_id)


def process_run(delivery_id: str, run_id: str, rule_id: str | None = None) -> str:
    return _guarded(_process_run, delivery_id, run_id, rule_id)


def _guarded(fn: Any, *args: Any) -> str:
    """Whatever escapes is stored by RQ and shown by rq-dashboard: it must carry no URL
    query string, secret or key, so unexpected errors are redacted before they leave."""
    try:
        return fn(*args)  # type: ignore[no-any-return]
    except (RunFailed, RunsPending, DeliveryFailed):
        raise
    except Exception as exc:
        raise DeliveryFailed(redact("".join(traceback.format_exception(exc)).strip())) from None


def _load(runtime: Runtime, delivery_id: str) -> dict[str, Any] | None:
    raw = runtime.redis.get(contract.delivery_key(delivery_id))
    return orjson.loads(raw) if raw is not None else None


def _unique_runs(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for run in runs:
        seen.setdefault(str(run["id"]), run)
    return list(seen.values())


def _process_delivery(delivery_id: str) -> str:
    runtime = get_runtime()
    delivery = _load(runtime, delivery_id)
    if delivery is None:
        raise DeliveryFailed(f"delivery {delivery_id}: its raw body expired (LSWH_KEEP_DAYS) or was deleted")
    rule_id = delivery.get("rule_id")
    done_key = contract.done_key(delivery_id)
    done = {m.decode() if isinstance(m, bytes) else m for m in runtime.redis.smembers(done_key)}
    runs = [run for run in _unique_runs(delivery["runs"]) if str(run["id"]) not in done]
    outcomes = runtime.run(process_runs(runtime, runs, rule_id)) if runs else {}

    job = get_current_job()
    last_attempt = not (job is not None and job.retries_left)
    written = [rid for rid, error in outcomes.items() if error is None]
    transient = {rid: e for rid, e in outcomes.items() if e is not None and e.transient}
    failed = {rid: e for rid, e in outcomes.items() if e is not None and (not e.transient or last_attempt)}
    split_off(runtime, delivery_id, rule_id, failed)
    mark_done(runtime, delivery_id, [*written, *failed])
    if transient and not last_attempt:
        _wait_at_least(job, max((e.retry_after or 0.0) for e in transient.values()))
        sample = "; ".join(f"run {rid}: {e.reason}" for rid, e in list(transient.items())[:3])
        raise RunsPending(f"{len(transient)} of {len(runs)} runs failed transiently, retrying: {sample}")
    return f"{len(written)} runs written, {len(failed)} failed, {len(done)} done before"


def _process_run(delivery_id: str, run_id: str, rule_id: str | None) -> str:
    runtime = get_runtime()
    delivery = _load(runtime, delivery_id)
    run: dict[str, Any] = {"id": run_id}  # expired delivery: the API has the rest
    if delivery is not None:
        rule_id = delivery.get("rule_id", rule_id)
        run = next((r for r in delivery["runs"] if str(r.get("id")) == run_id), run)
    error = runtime.run(process_runs(runtime, [run], rule_id)).get(run_id)
    if error is not None:
        raise RunFailed(f"run {run_id}: {error.reason}")
    return f"run {run_id} written"


def mark_done(runtime: Runtime, delivery_id: str, run_ids: list[str]) -> None:
    if not run_ids:
        return
    key = contract.done_key(delivery_id)
    with runtime.redis.pipeline() as pipe:
        pipe.sadd(key, *run_ids)
        pipe.expire(key, runtime.settings.keep_seconds)
        pipe.execute()


def split_off(runtime: Runtime, delivery_id: str, rule_id: str | None, failures: dict[str, RunError]) -> None:
    """Each failed run becomes its own job in RQ's failed registry; requeueing it (dashboard,
    `lswh requeue`) runs `process_run` for that run alone."""
    if not failures:
        return
    settings = runtime.settings
    queue = Queue(contract.QUEUE, connection=runtime.redis)
    with runtime.redis.pipeline() as pipe:
        for run_id, error in failures.items():
            log.warning("run %s of delivery %s failed: %s", run_id, delivery_id, error.reason)
            job = Job.create(
                contract.RUN_JOB,
                args=(delivery_id, run_id, rule_id),
                connection=runtime.redis,
                id=contract.run_job_id(delivery_id, run_id),
                description=contract.run_job_description(delivery_id, run_id),
                **contract.job_lifetimes(settings),
                origin=queue.name,
            )
            job.ended_at = now()
            job.save(pipeline=pipe)
            record_job_failure(job, f"{RunFailed.__module__}.{RunFailed.__name__}: run {run_id}: {error.reason}",
                               pipe)
            job.cleanup(ttl=settings.failed_keep_seconds, pipeline=pipe)
        pipe.sadd(queue.redis_queues_keys, queue.key)
        pipe.execute()


def _wait_at_least(job: Job | None, seconds: float) -> None:
    """A long Retry-After reschedules the job instead of holding the worker: stretch the next
    retry interval RQ will use (it reads this job object when it schedules the retry)."""
    if job is None or not seconds or not job.retry_intervals or not job.retries_left:
        return
    index = max(len(job.retry_intervals) - job.retries_left, 0)
    # +1: RQ schedules to the whole second and could otherwise come back a little early.
    job.retry_intervals[index] = max(job.retry_intervals[index], math.ceil(seconds) + 1)
