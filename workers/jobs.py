"""The RQ job functions (named by dotted path in lswh_core.contract), and the job flow.

Each job function hands one coroutine, its flow, to the worker's I/O loop and waits
(workers/runtime.py); the flow is async from there to the last example written.

One job per delivery processes its runs a slice at a time (workers/flow/slices.py): the next
slice starts reading once one has started its last fetch (slices.Relay), and each is recorded as
done in order, so a worker's memory does not grow with the delivery and a timeout or a kill
loses at most the two slices in flight. Runs that fail
transiently make the job retry (RQ Retry, backoff with jitter) for those runs only. A run that
fails permanently, or still fails on the last attempt, is split off into a failed job of its
own, so the delivery job never fails because of one run.

A delivery's path, each module once and in order: the job function here -> its flow here
(`_delivery`: the rule, then a slice at a time) -> the slice (workers/flow/slices.py) -> hydration
(workers/fetch/hydrate.py, presigned objects through workers/fetch/s3.py) -> the LangSmith door
(workers/langsmith/door.py) -> the action's writer (workers/actions/, workers/actions/dataset_writer.py) -> back here
to record the slice (`_settle`: done runs, figures, failed runs split off).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import orjson
from rq import Queue, get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.job_lifecycle import record_job_failure
from rq.registry import FailedJobRegistry
from rq.utils import now

from lswh_core import contract
from lswh_core.ids import is_uuid
from lswh_core.logs import log_context
from lswh_core.redact import redact
from workers.actions.dataset_writer import Outcomes
from workers.bookkeeping import accounting, metrics, received
from workers.errors import RunError
from workers.flow import threads
from workers.flow.slices import SLICE_RUNS, Relay, process_slice
from workers.runtime import Runtime, get_runtime

log = logging.getLogger("lswh.jobs")

SliceTask = asyncio.Task[tuple[Outcomes, list[dict[str, Any]]]]  # process_slice running

# Stop starting slices when the next one might not finish before the job's timeout: the rest
# is retried (or, on the last attempt, split off) instead of being cut off mid-write.
DEADLINE_SAFETY = 2.0


class RunFailed(Exception):
    """Its text ends with `run <run id>: <reason>` (what rq-dashboard shows)."""


class RunsPending(Exception):
    """Some runs failed transiently: RQ retries the delivery job for those runs only."""


class DeliveryFailed(Exception):
    """The delivery as a whole could not be processed (e.g. its raw body is gone)."""


class DeliveryRefused(DeliveryFailed):
    """The delivery cannot be processed as it is (a shape not known yet, a TRAJECTORY_ID rule, a
    malformed `threads`): it fails at once as its own job, never retried (on_job_exception), kept
    with its body (the ingress keeps such bodies LSWH_FAILED_KEEP_DAYS); `lswh replay` or a requeue
    runs it again, e.g. after an upgrade that knows the shape."""


class ThreadFailed(Exception):
    """Its text ends with `thread <thread id>: <reason>` (a thread split off its delivery)."""


# Threads per slice of a thread delivery: each is one example per action, read THREADS_PER_QUERY
# threads a request; a slice's memory is its threads' turns.
THREAD_SLICE = 100


def process_delivery(delivery_id: str) -> str:
    with log_context(delivery_id=delivery_id):
        return _guarded(_delivery, delivery_id)


def process_run(delivery_id: str, run_id: str, rule_id: str | None = None, project_id: str | None = None,
                start_time: str | None = None) -> str:
    """A split-off run. Jobs split off before project_id/start_time existed still requeue."""
    with log_context(delivery_id=delivery_id, run_id=run_id, rule_id=rule_id):
        return _guarded(_run, delivery_id, run_id, rule_id, project_id, start_time)


def process_thread(delivery_id: str, thread_id: str, rule_id: str | None = None, project_id: str | None = None
                   ) -> str:
    """A thread split off its delivery (requeued from the failed registry): that thread alone."""
    with log_context(delivery_id=delivery_id, rule_id=rule_id):
        return _guarded(_thread, delivery_id, thread_id, rule_id, project_id)


Flow = Callable[..., Coroutine[Any, Any, str]]


def _guarded(flow: Flow, *args: Any) -> str:
    """Run the job's flow on the worker's loop: the one hop of a job. The RQ job (read here, on
    RQ's thread: RQ keeps the current job per thread) is handed to the flow.

    Whatever escapes is stored by RQ and shown by rq-dashboard: it must carry no URL
    query string, secret or key, so unexpected errors are redacted before they leave."""
    try:
        runtime = get_runtime()
        return runtime.run(flow(runtime, get_current_job(), *args))
    except (RunFailed, RunsPending, DeliveryFailed, ThreadFailed):
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


def _done(runtime: Runtime, delivery_id: str) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else m for m in runtime.redis.smembers(contract.done_key(delivery_id))}


def _last_attempt(job: Job | None) -> bool:
    return not (job is not None and job.retries_left)


async def _delivery(runtime: Runtime, job: Job | None, delivery_id: str) -> str:
    delivery = _load(runtime, delivery_id)
    if delivery is None:
        raise DeliveryFailed(f"delivery {delivery_id}: its raw body expired (LSWH_REPLAY_DAYS) or was deleted")
    rule_id = delivery.get("rule_id")
    with log_context(rule_id=rule_id):
        plan = await _plan(runtime, delivery_id, delivery, rule_id)
        if plan is None:
            return await _delivery_runs(runtime, job, delivery_id, delivery, rule_id)
        return await _delivery_threads(runtime, job, delivery_id, plan)


async def _plan(runtime: Runtime, delivery_id: str, delivery: dict[str, Any], rule_id: Any) -> threads.Plan | None:
    """None: a runs delivery (today's path). A Plan: a thread rule's delivery. DeliveryRefused:
    neither. Decided by the rule's group_by (workers/flow/threads.py), never by a guessed key."""
    has_runs = isinstance(delivery.get("runs"), list)
    if has_runs and (delivery.get("lswh_source") or not rule_id):
        return None  # backfill and reconciliation never feed a thread rule; without a rule, no group_by
    rule, unread = None, None
    if isinstance(rule_id, str) and is_uuid(rule_id):  # LangSmith's rule ids are UUIDs
        try:
            rule, unread = await threads.rule_of(runtime, rule_id, fresh=not has_runs)
        except RunError as exc:  # transient: the job is retried
            raise DeliveryFailed(f"delivery {delivery_id}: {exc.reason}") from None
    try:
        plan = threads.plan(delivery, rule, unread)
    except threads.Refused as exc:
        raise DeliveryRefused(f"delivery {delivery_id}: {exc}") from None
    if plan is not None:
        threads.log_first_shape(runtime.redis, plan.rule.id, delivery, runtime.settings.keep_seconds)
    return plan


async def _delivery_threads(runtime: Runtime, job: Job | None, delivery_id: str, plan: threads.Plan) -> str:
    """A thread rule's delivery: one example per thread, a slice of threads at a time; a thread
    that fails is split off as its own job, like a run."""
    rule_id = plan.rule.id
    keep = runtime.settings.keep_seconds
    accounting.record_received(runtime.redis, delivery_id, len(plan.threads), keep_seconds=keep)
    received.record(runtime.redis, rule_id, [], delivery_id, keep)  # the rule seen; `lswh replay --rule`
    done = _done(runtime, delivery_id)
    queue = deque(ref for ref in plan.threads if ref.key not in done)
    if job is not None:
        job.meta["lswh_threads"] = True  # on_job_exception must not split it per run
        job.save_meta()
    last_attempt = _last_attempt(job)
    transient: dict[str, RunError] = {}
    totals: Counter[str] = Counter()
    refs = {ref.key: ref for ref in plan.threads}
    while queue:
        batch = [queue.popleft() for _ in range(min(THREAD_SLICE, len(queue)))]
        outcomes = await threads.process_threads(runtime, batch, plan.rule, delivery_id=delivery_id)
        totals.update(_settle(runtime, delivery_id, rule_id, outcomes, {}, last_attempt, transient, threads_of=refs))
    if transient and not last_attempt:
        _wait_at_least(job, max((e.retry_after or 0.0) for e in transient.values()))
        sample = "; ".join(f"{key}: {e.reason}" for key, e in list(transient.items())[:3])
        raise RunsPending(f"{len(transient)} threads failed transiently, retrying: {sample}")
    if transient:
        split_off_threads(runtime, delivery_id, rule_id, transient, refs)
        totals["failed"] += len(transient)
    summary = ", ".join(f"{n} {name}" for name, n in sorted(totals.items()))
    if plan.runs_without_thread:
        raise DeliveryRefused(
            f"delivery {delivery_id}: {len(plan.runs_without_thread)} runs carry no thread id (thread_id, or "
            f"metadata thread_id/session_id/conversation_id), e.g. run {plan.runs_without_thread[0]}; "
            f"its threads were processed: {summary or 'nothing to do'}")
    return f"threads: {summary or 'nothing to do'}; {len(done)} done before"


async def _delivery_runs(runtime: Runtime, job: Job | None, delivery_id: str, delivery: dict[str, Any],
                         rule_id: str | None) -> str:
    runs = _unique_runs(delivery.pop("runs"))  # from here on, only the queue below holds them
    keep = runtime.settings.keep_seconds
    accounting.record_received(runtime.redis, delivery_id, len(runs), keep_seconds=keep)
    received.record(runtime.redis, rule_id, runs, delivery_id, keep)
    done = _done(runtime, delivery_id)
    queue = deque(run for run in runs if str(run["id"]) not in done)
    del runs  # the queue holds what is still to do

    last_attempt = _last_attempt(job)
    deadline = time.monotonic() + (job.timeout if job is not None and job.timeout else math.inf)
    transient: dict[str, RunError] = {}
    totals: Counter[str] = Counter()
    longest = 0.0
    relay: Relay | None = None
    # The slice finishing while the next one reads: its task, its runs by id, when it started.
    finishing: tuple[SliceTask, dict[str, dict[str, Any]], float] | None = None
    in_flight: list[SliceTask] = []

    async def settle(task: SliceTask, by_id: dict[str, dict[str, Any]],
                     started: float) -> None:
        nonlocal longest
        outcomes, _ = await task
        longest = max(longest, time.monotonic() - started)
        totals.update(_settle(runtime, delivery_id, rule_id, outcomes, by_id, last_attempt, transient))

    try:
        while queue:
            # The slice still finishing counts with the time it has taken so far.
            so_far = time.monotonic() - finishing[2] if finishing is not None else 0.0
            if time.monotonic() + DEADLINE_SAFETY * max(longest, so_far) > deadline:
                log.warning("delivery %s: stopping before the job timeout with %d runs to go", delivery_id, len(queue))
                reason = RunError("not reached before the job timeout (LSWH_JOB_TIMEOUT)", transient=True)
                transient.update((str(run["id"]), reason) for run in queue)
                break
            batch = [queue.popleft() for _ in range(min(SLICE_RUNS, len(queue)))]
            started = time.monotonic()
            relay = Relay.following(relay)
            task = asyncio.ensure_future(process_slice(runtime, batch, rule_id, delivery_id=delivery_id, relay=relay))
            in_flight.append(task)
            await asyncio.wait((relay.started, task), return_when=asyncio.FIRST_COMPLETED)
            if not relay.started.done():
                await task  # it failed before starting its last fetch: its exception is the job's
            queue.extendleft(reversed(relay.started.result()))  # the runs it did not reach go next
            if finishing is not None:  # slices are recorded in order, the earlier one first
                await settle(*finishing)
            finishing = (task, {str(run["id"]): run for run in batch}, started)
        if finishing is not None:
            await settle(*finishing)
    finally:  # a failed slice fails the job: no other slice outlives it
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)

    if transient and not last_attempt:
        _wait_at_least(job, max((e.retry_after or 0.0) for e in transient.values()))
        sample = "; ".join(f"run {rid}: {e.reason}" for rid, e in list(transient.items())[:3])
        raise RunsPending(f"{len(transient)} runs failed transiently, retrying: {sample}")
    if transient:  # last attempt: what is still transient is failed now (split off)
        split_off(runtime, delivery_id, rule_id, transient, {})
        totals["failed"] += len(transient)
    summary = ", ".join(f"{n} {name}" for name, n in sorted(totals.items()))
    return f"{summary or 'nothing to do'}; {len(done)} done before"


def _settle(runtime: Runtime, delivery_id: str, rule_id: str | None, outcomes: Outcomes,
            runs: dict[str, dict[str, Any]], last_attempt: bool, transient: dict[str, RunError], *,
            threads_of: dict[str, threads.ThreadRef] | None = None) -> Counter[str]:
    """Record one slice: done runs (or threads, keyed "thread:<id>", with `threads_of`), split-off
    failures, figures. Transient ones wait for a retry."""
    counts: Counter[str] = Counter()
    done: list[str] = []
    failed: dict[str, RunError] = {}
    for run_id, outcome in outcomes.items():
        if isinstance(outcome, RunError):
            if outcome.transient and not last_attempt:
                transient[run_id] = outcome
                continue
            failed[run_id] = outcome
            counts["failed"] += 1
            metrics.count_runs("failed", 1, "transient" if outcome.transient else "permanent")
        else:
            counts[outcome] += 1
            metrics.count_runs(outcome, 1, None)
        done.append(run_id)
    if threads_of is not None:
        split_off_threads(runtime, delivery_id, rule_id, failed, threads_of)
    else:
        split_off(runtime, delivery_id, rule_id, failed, runs)
    mark_done(runtime, delivery_id, done)
    accounting.record_outcomes(runtime.redis, delivery_id, counts, keep_seconds=runtime.settings.keep_seconds)
    return counts


async def _run(runtime: Runtime, job: Job | None, delivery_id: str, run_id: str, rule_id: str | None,
               project_id: str | None, start_time: str | None) -> str:
    delivery = _load(runtime, delivery_id)
    # Expired delivery: the API has the rest, located by project and start time.
    run: dict[str, Any] = {"id": run_id, "session_id": project_id, "start_time": start_time}
    if delivery is not None:
        rule_id = delivery.get("rule_id", rule_id)
        run = next((r for r in delivery["runs"] if str(r.get("id")) == run_id), run)
    outcomes, _ = await process_slice(runtime, [run], rule_id, delivery_id=delivery_id)
    outcome = outcomes.get(run_id) or RunError("no outcome", transient=False)
    if isinstance(outcome, RunError):
        raise RunFailed(failure_text(run_id, outcome))
    # It counted as failed when it was split off; now it has its real outcome.
    accounting.settle_requeued(runtime.redis, delivery_id, outcome, keep_seconds=runtime.settings.keep_seconds)
    metrics.count_runs(outcome, 1, None)
    return f"run {run_id} {outcome}"


async def _thread(runtime: Runtime, job: Job | None, delivery_id: str, thread_id: str, rule_id: str | None,
                  project_id: str | None) -> str:
    ref = threads.ThreadRef(thread_id, project_id)
    try:
        rule, _ = await threads.rule_of(runtime, rule_id, fresh=True) if rule_id else (None, None)
    except RunError as exc:
        raise ThreadFailed(failure_text(thread_id, exc, kind="thread")) from None
    if rule is None or rule.group_by != threads.THREAD_ID:
        raise ThreadFailed(failure_text(thread_id, RunError(
            f"rule {rule_id} is not a THREAD_ID thread rule in LangSmith now", transient=False), kind="thread"))
    outcomes = await threads.process_threads(runtime, [ref], rule, delivery_id=delivery_id)
    outcome = outcomes.get(ref.key) or RunError("no outcome", transient=False)
    if isinstance(outcome, RunError):
        raise ThreadFailed(failure_text(thread_id, outcome, kind="thread"))
    accounting.settle_requeued(runtime.redis, delivery_id, outcome, keep_seconds=runtime.settings.keep_seconds)
    metrics.count_runs(outcome, 1, None)
    return f"thread {thread_id} {outcome}"


def failure_text(run_id: str, error: RunError, prefix: str = "", *, kind: str = "run") -> str:
    """Ends with `run <run id>: <reason>` (`thread <id>: ...` for a thread); a failing transform's
    (redacted) traceback goes above."""
    details = getattr(error, "details", "")
    last = f"{prefix}{kind} {run_id}: {error.reason}"
    return f"{details}\n\n{last}" if details else last


def mark_done(runtime: Runtime, delivery_id: str, run_ids: list[str]) -> None:
    if not run_ids:
        return
    key = contract.done_key(delivery_id)
    with runtime.redis.pipeline() as pipe:
        pipe.sadd(key, *run_ids)
        # Only a delivery job reads it, and only while the raw body is there to process.
        pipe.expire(key, runtime.settings.replay_seconds)
        pipe.execute()


def _locator(run: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """What reading the run back needs besides its id (never a URL or a secret)."""
    if run is None:
        return None, None
    project, start = run.get("session_id"), run.get("start_time")
    return (str(project) if project else None), (str(start) if start else None)


def split_off(runtime: Runtime, delivery_id: str, rule_id: str | None, failures: dict[str, RunError],
              runs: dict[str, dict[str, Any]]) -> None:
    """Each failed run becomes its own job in RQ's failed registry; requeueing it (dashboard,
    `lswh requeue`) runs `process_run` for that run alone."""
    for run_id, error in failures.items():
        log.warning("run %s of delivery %s failed: %s", run_id, delivery_id, error.reason,
                    extra={"delivery_id": delivery_id, "rule_id": rule_id, "run_id": run_id})
    _failed_jobs(runtime, [
        (contract.RUN_JOB, (delivery_id, run_id, rule_id, *_locator(runs.get(run_id))),
         contract.run_job_id(delivery_id, run_id), contract.run_job_description(delivery_id, run_id),
         failure_text(run_id, error, f"{RunFailed.__module__}.{RunFailed.__name__}: "))
        for run_id, error in failures.items()])


def split_off_threads(runtime: Runtime, delivery_id: str, rule_id: str | None, failures: dict[str, RunError],
                      refs: dict[str, threads.ThreadRef]) -> None:
    """Each failed thread (keyed "thread:<id>") becomes its own failed job; requeueing it runs
    `process_thread` for that thread alone."""
    entries = []
    for key, error in failures.items():
        ref = refs.get(key) or threads.ThreadRef(key.removeprefix("thread:"))
        log.warning("thread %s of delivery %s failed: %s", ref.thread_id, delivery_id, error.reason,
                    extra={"delivery_id": delivery_id, "rule_id": rule_id})
        entries.append((contract.THREAD_JOB, (delivery_id, ref.thread_id, rule_id, ref.project_id),
                        contract.thread_job_id(delivery_id, ref.thread_id),
                        contract.thread_job_description(delivery_id, ref.thread_id),
                        failure_text(ref.thread_id, error, f"{ThreadFailed.__module__}.{ThreadFailed.__name__}: ",
                                     kind="thread")))
    _failed_jobs(runtime, entries)


def _failed_jobs(runtime: Runtime, entries: list[tuple[str, tuple[Any, ...], str, str, str]]) -> None:
    """(function, args, job id, description, exception text) each as a job in the failed registry."""
    if not entries:
        return
    settings = runtime.settings
    queue = Queue(contract.QUEUE, connection=runtime.redis)
    with runtime.redis.pipeline() as pipe:
        for func, args, job_id, description, text in entries:
            job = Job.create(func, args=args, connection=runtime.redis, id=job_id, description=description,
                             **contract.job_lifetimes(settings), origin=queue.name)
            job.ended_at = now()
            job.save(pipeline=pipe)
            record_job_failure(job, text, pipe)
            job.cleanup(ttl=settings.failed_keep_seconds, pipeline=pipe)
        pipe.sadd(queue.redis_queues_keys, queue.key)
        pipe.execute()


def on_job_exception(job: Job, exc_type: type[BaseException], exc_value: BaseException, tb: Any) -> bool:
    """Worker exception handler (also called by RQ for jobs abandoned by a dead worker).

    A delivery job killed (SIGKILL, OOM) with no retry left is given one more attempt, so even
    with LSWH_RETRIES=0 a kill is picked up once. Killed again, or out of time on its last
    attempt, its remaining runs are split off per run, like any other failure, and the delivery
    job itself runs once more to find nothing left: it never sits failed for its runs' sake.
    """
    if issubclass(exc_type, DeliveryRefused):
        job.retries_left = 0  # RQ reads this job object right after: failed now, never retried blindly
        return True
    if job.func_name != contract.DELIVERY_JOB or job.retries_left or job.meta.get("lswh_threads"):
        return True
    if exc_type not in (AbandonedJobError,) and not _timed_out(exc_type):
        return True
    runtime = get_runtime()
    delivery_id = str(job.args[0])
    kills = int(job.meta.get("lswh_abandoned", 0)) + (1 if exc_type is AbandonedJobError else 0)
    job.meta["lswh_abandoned"] = kills
    job.save_meta()
    if exc_type is AbandonedJobError and kills == 1 and not runtime.settings.retries:
        log.warning("delivery %s: its worker died; trying once more", delivery_id, extra={"delivery_id": delivery_id})
        _one_more_attempt(job, runtime)
        return True
    delivery = _load(runtime, delivery_id)
    if delivery is None or not isinstance(delivery.get("runs"), list):
        return True
    reason = "the worker was killed on every attempt" if exc_type is AbandonedJobError else "the job timed out"
    done = _done(runtime, delivery_id)
    remaining = {str(r["id"]): r for r in _unique_runs(delivery["runs"]) if str(r["id"]) not in done}
    failures = {run_id: RunError(f"{reason} (LSWH_JOB_TIMEOUT / worker memory)", transient=True)
                for run_id in remaining}
    split_off(runtime, delivery_id, delivery.get("rule_id"), failures, remaining)
    mark_done(runtime, delivery_id, list(remaining))
    accounting.record_outcomes(runtime.redis, delivery_id, {"failed": len(failures)},
                               keep_seconds=runtime.settings.keep_seconds)
    log.warning("delivery %s: %s; %d runs split off as failed jobs", delivery_id, reason, len(failures),
                extra={"delivery_id": delivery_id})
    if exc_type is AbandonedJobError:
        _one_more_attempt(job, runtime)  # finds every run done and finishes
    else:
        FailedJobRegistry(queue=Queue(job.origin, connection=runtime.redis)).remove(job, delete_job=False)
    return True


def _timed_out(exc_type: type[BaseException]) -> bool:
    from rq.timeouts import JobTimeoutException

    return issubclass(exc_type, JobTimeoutException)


def _one_more_attempt(job: Job, runtime: Runtime) -> None:
    """RQ decides to retry from this very job object right after the handlers return."""
    job.retries_left = 1
    job.retry_intervals = [max(1, runtime.settings.retry_base_seconds)]


def _wait_at_least(job: Job | None, seconds: float) -> None:
    """A long Retry-After reschedules the job instead of holding the worker: stretch the next
    retry interval RQ will use (it reads this job object when it schedules the retry)."""
    if job is None or not seconds or not job.retry_intervals or not job.retries_left:
        return
    index = max(len(job.retry_intervals) - job.retries_left, 0)
    # +1: RQ schedules to the whole second and could otherwise come back a little early.
    job.retry_intervals[index] = max(job.retry_intervals[index], math.ceil(seconds) + 1)
