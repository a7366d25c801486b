"""Reconciliation: once per LSWH_RECONCILE_EVERY, across all workers, find the runs each rule
matched whose webhook deliveries never arrived, and the runs whose feedback changed since the
last pass, and feed both through the delivery job path (workers/flow/synthetic.py).

One pass per period: RQ 3's cron runs in each worker process with no cross-process lock, so on
each maintenance tick every worker offers the pass (`offer_pass`); the one whose SET NX on the
period's key wins enqueues it, as a job whose id names the period.

Which rules: those whose webhook URL starts with LSWH_PUBLIC_URL, those the rules file names and
those seen in deliveries (workers/bookkeeping/received.py), so a rule whose every delivery was lost is still
found when it points here or is named. The window overlaps the previous pass's by one period and
ends LSWH_RECONCILE_GRACE before now, because LangSmith delivers some time after a run matches.
A run matched in the window and never received is lost: counted (`lswh_runs_lost_total{rule_id}`,
a log line) and written. Late corrections: runs of the same rules whose feedback changed since the
previous pass started (start times back to LSWH_KEEP_DAYS) are processed again, so their examples
follow the correction. The window end and the pass's time are stored only when every rule
succeeded: a failed pass leaves the next one to cover its window again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Sequence

import redis as redis_py
from rq import Queue
from rq.job import Job
from rq.utils import utcparse

from lswh_core import contract
from lswh_core.logs import log_context
from lswh_core.rules import Rules, load_rules
from lswh_core.settings import Settings
from workers.bookkeeping import received
from workers.bookkeeping.metrics import count_lost
from workers.flow import synthetic
from workers.langsmith.door import LangSmith, Locator, RuleInfo
from workers.runtime import Runtime, get_runtime

log = logging.getLogger("lswh.reconcile")

# A period's key outlives the period by this many, so a slow worker's late tick cannot win it again.
PERIOD_KEY_PERIODS = 3
# A run matched by the rule's filter and with any feedback in the modified bounds (the v2 query's
# feedback bounds apply to the filter's feedback conditions and need at least one).
ANY_FEEDBACK = 'neq(feedback_key, "")'


def period_index(now: float, every: float) -> int:
    return int(now // every)


def pass_window(last_end: float | None, now: float, every: float, grace: float, keep: float,
                oldest_queued: float | None = None) -> tuple[float, float]:
    """[start, end] in unix seconds: from one period before the last window's end (overlap) or,
    on a first pass, one period back; to GRACE before now; never further back than KEEP.

    A delivery still waiting in the queue has not been recorded as received (a worker records
    it when it starts the job), so while the queue is behind, the window ends GRACE before the
    oldest waiting delivery arrived instead: what LangSmith delivered before that has been
    recorded, and its runs are not called lost."""
    end = now - grace
    if oldest_queued is not None:
        end = min(end, oldest_queued - grace)
    start = (last_end if last_end is not None else end) - every
    return max(min(start, end - every), now - keep), end


def feedback_filter(rule_filter: str | None, correction_keys: Sequence[str] | None) -> str:
    """The rule's filter with a feedback condition added: on the correction keys when the rules
    file names them, else on any feedback."""
    if correction_keys:
        conds = [f"eq(feedback_key, {json.dumps(key)})" for key in correction_keys]
        condition = conds[0] if len(conds) == 1 else f"or({', '.join(conds)})"
    else:
        condition = ANY_FEEDBACK
    return f"and({rule_filter}, {condition})" if rule_filter else condition


def pick_rules(rules: Iterable[RuleInfo], named: set[str]) -> tuple[list[RuleInfo], list[str]]:
    """Rules to reconcile (pointing here or named), and why others named were left out."""
    chosen: list[RuleInfo] = []
    skipped: list[str] = []
    for rule in rules:
        if not (rule.points_here or rule.id in named):
            continue
        if not rule.is_enabled:
            skipped.append(f"rule {rule.id}: disabled")
        elif rule.sampling_rate < 1:
            # Most of what it matched it never chose: every unsent run would look lost.
            skipped.append(f"rule {rule.id}: samples {rule.sampling_rate:g} of its runs")
        elif rule.group_by:
            # It matches whole threads (or trajectories), not runs: querying its filter over runs would
            # count runs it never matched as lost. Its threads are not reconciled (yet).
            skipped.append(f"rule {rule.id}: matches whole threads (group_by {rule.group_by}), not runs; "
                           "thread rules are not reconciled")
        elif not (rule.project_id or rule.dataset_id):
            skipped.append(f"rule {rule.id}: has neither project nor dataset")
        else:
            chosen.append(rule)
    return chosen, skipped


def offer_pass(redis: redis_py.Redis, settings: Settings, now: float | None = None) -> str | None:
    """Called by every worker on every maintenance tick: the job id of the pass this worker
    enqueued, or None (reconciliation off, or this period's pass already taken)."""
    every = settings.reconcile_every
    if not every:
        return None
    index = period_index(time.time() if now is None else now, every)
    ttl = max(1, int(every * PERIOD_KEY_PERIODS))
    if not redis.set(contract.reconcile_period_key(index), b"1", nx=True, ex=ttl):
        return None
    queue = Queue(contract.QUEUE, connection=redis)
    job = Job.create(contract.RECONCILE_JOB, args=(index,), connection=redis, id=contract.reconcile_job_id(index),
                     description=f"reconciliation pass of period {index}", origin=queue.name,
                     **contract.job_lifetimes(settings))
    queue.enqueue_job(job)
    return job.id


def oldest_queued(redis: redis_py.Redis) -> float | None:
    """When the job at the head of the delivery queue was enqueued (unix seconds), or None
    when nothing waits."""
    head = redis.lindex(Queue(contract.QUEUE, connection=redis).key, 0)
    if head is None:
        return None
    enqueued = redis.hget(Job.key_for(_text(head)), "enqueued_at")
    if not enqueued:  # taken between the two reads
        return None
    return utcparse(_text(enqueued)).replace(tzinfo=dt.UTC).timestamp()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def reconcile_pass(period: int) -> str:
    runtime = get_runtime()
    return runtime.run(_pass(runtime, period))


def _float(value: bytes | str | None) -> float | None:
    return float(value) if value is not None else None


async def _pass(runtime: Runtime, period: int) -> str:
    settings, redis = runtime.settings, runtime.redis
    if not settings.reconcile_every:  # a pass left queued by a deployment that has since turned it off
        return "reconciliation is off (LSWH_RECONCILE_EVERY unset)"
    every = settings.reconcile_every
    started = time.time()
    last_end = _float(redis.get(contract.RECONCILE_WINDOW_END_KEY))
    feedback_since = _float(redis.get(contract.RECONCILE_FEEDBACK_SINCE_KEY)) or (started - every)
    waiting_since = oldest_queued(redis)
    low, high = pass_window(last_end, started, every, settings.reconcile_grace, settings.keep_seconds,
                            waiting_since)
    if waiting_since is not None and high < started - settings.reconcile_grace:
        log.info("reconciliation window ends %.0f s early: deliveries wait in the queue since %s",
                 started - settings.reconcile_grace - high, _utc(waiting_since).isoformat())
    rules_conf = _rules_file(settings)
    named = set(received.rules_seen(redis)) | set(rules_conf.rule_ids if rules_conf else ())
    rules, skipped = pick_rules(await runtime.langsmith.rules(settings.public_url), named)
    for reason in skipped:
        log.warning("reconciliation skips %s", reason)
    lost_total = corrected_total = 0
    failures: list[str] = []
    for rule in rules:
        keys = rules_conf.for_rule(rule.id).correction_keys if rules_conf else None
        with log_context(rule_id=rule.id):
            try:
                lost, corrected = await _one_rule(runtime, rule, _utc(low), _utc(high), _utc(feedback_since),
                                                  _utc(started), keys)
            except Exception as exc:  # one rule's failure must not cost the others their pass
                log.warning("reconciliation of rule %s failed: %s", rule.id, type(exc).__name__)
                failures.append(rule.id)
                continue
        lost_total += lost
        corrected_total += corrected
    summary = (f"period {period}: {len(rules)} rules, window {_utc(low).isoformat()} to {_utc(high).isoformat()}, "
               f"{lost_total} lost runs written, {corrected_total} runs with changed feedback re-checked")
    if failures:
        raise RuntimeError(f"{summary}; rules that failed (the next pass covers their window again): "
                           f"{', '.join(failures)}")
    with redis.pipeline() as pipe:
        pipe.set(contract.RECONCILE_WINDOW_END_KEY, repr(high), ex=settings.keep_seconds)
        pipe.set(contract.RECONCILE_FEEDBACK_SINCE_KEY, repr(started), ex=settings.keep_seconds)
        # Expires like the rest; the stale-pass alert has fired days before.
        pipe.set(contract.RECONCILE_LAST_SUCCESS_KEY, repr(time.time()), ex=settings.keep_seconds)
        pipe.execute()
    log.info("reconciliation pass succeeded: %s", summary)
    return summary


async def _one_rule(runtime: Runtime, rule: RuleInfo, low: dt.datetime, high: dt.datetime,
                    feedback_since: dt.datetime, started: dt.datetime, correction_keys: Sequence[str] | None
                    ) -> tuple[int, int]:
    langsmith: LangSmith = runtime.langsmith
    redis, settings = runtime.redis, runtime.settings
    matched = [loc async for loc in langsmith.match_runs(rule, start=low, end=high)]
    lost_ids = set(received.not_received(redis, rule.id, [loc.id for loc in matched]))
    lost = [loc for loc in matched if loc.id in lost_ids]
    if lost:
        count_lost(rule.id, len(lost))
        log.warning("reconciliation found %d lost runs of rule %s (matched, never delivered); writing them",
                    len(lost), rule.id, extra={"rule_id": rule.id, "lost": len(lost)})
        _feed(redis, settings, rule.id, lost, low, high)
        received.record_runs(redis, rule.id, [loc.id for loc in lost], settings.keep_seconds)
    oldest = started - dt.timedelta(seconds=settings.keep_seconds)
    changed = [loc async for loc in langsmith.match_runs(
        rule, start=oldest, end=started, feedback_since=feedback_since,
        filter=feedback_filter(rule.filter, correction_keys)) if loc.id not in lost_ids]
    if changed:
        log.info("reconciliation re-checks %d runs of rule %s whose feedback changed", len(changed), rule.id)
        _feed(redis, settings, rule.id, changed, oldest, started)
    return len(lost), len(changed)


def _feed(redis: redis_py.Redis, settings: Settings, rule_id: str, runs: Sequence[Locator], low: dt.datetime,
          high: dt.datetime) -> None:
    synthetic.feed(redis, settings, rule_id, [loc.as_run() for loc in runs], source="reconcile", start=low, end=high)


def _rules_file(settings: Settings) -> Rules | None:
    if not settings.rules_file:
        return None

    return load_rules(settings.rules_file, settings)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
