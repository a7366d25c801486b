"""The job contract between ingress and workers: queue, job names, ids and key formats.

The ingress names jobs by dotted path, so it never imports the workers' dependencies.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from lswh_core.settings import Settings

QUEUE = "lswh"
DELIVERY_JOB = "workers.jobs.process_delivery"
RUN_JOB = "workers.jobs.process_run"

KEY_PREFIX = "lswh:"

# A worker's RQ state while LangSmith's /info cannot be read: registered and heartbeating (alive),
# taking no jobs (workers/worker.py); `lswh status` and lswh_workers{state=...} show it.
WORKER_WAITING_INFO = "waiting_info"

# Finished jobs stay visible in the dashboard for a day, then expire.
FINISHED_JOB_TTL = 86_400


def job_lifetimes(settings: Settings) -> dict[str, Any]:
    """RQ job options every pipeline job gets, whoever creates it (ingress or worker)."""
    return {"timeout": settings.job_timeout, "result_ttl": FINISHED_JOB_TTL,
            "failure_ttl": settings.failed_keep_seconds}


def delivery_id_of(body: bytes) -> str:
    """A delivery is its raw body: LangSmith resends identical bytes and has no event id."""
    return hashlib.sha256(body).hexdigest()[:32]


def seen_key(delivery_id: str) -> str:
    """Kept LSWH_KEEP_DAYS; its existence is the duplicate check. The key is the body's hash
    and its value one byte, so a week of duplicate detection costs ~100 bytes a delivery."""
    return f"{KEY_PREFIX}seen:{delivery_id}"


def delivery_key(delivery_id: str) -> str:
    """The raw body, kept LSWH_REPLAY_DAYS: what processing, requeue and `lswh replay` read."""
    return f"{KEY_PREFIX}delivery:{delivery_id}"


def done_key(delivery_id: str) -> str:
    """Run ids of this delivery already done, so a retry redoes only the rest; kept as long as
    the raw body (LSWH_REPLAY_DAYS), the only thing a delivery job can process."""
    return f"{KEY_PREFIX}done:{delivery_id}"


def actions_done_key(delivery_id: str) -> str:
    """A hash of "<action key>:<run id>" -> outcome for the (action, run) pairs of this delivery
    already done, so a failed action is retried alone; kept as long as the raw body."""
    return f"{KEY_PREFIX}actions-done:{delivery_id}"


def queue_added_key(queue_id: str) -> str:
    """Run ids already added to this annotation queue (by any delivery, backfill or pass): LangSmith
    does not de-duplicate queue items. Kept LSWH_KEEP_DAYS from the last add."""
    return f"{KEY_PREFIX}queue-added:{queue_id}"


def accounting_key(delivery_id: str) -> str:
    """Per-delivery run accounting: a hash of ACCOUNT_FIELDS counts, kept for LSWH_KEEP_DAYS."""
    return f"{KEY_PREFIX}acct:{delivery_id}"


# received = written + updated + unchanged + skipped + failed + pending (pending is not stored).
ACCOUNT_FIELDS = ("received", "written", "updated", "unchanged", "skipped", "failed")
RUN_OUTCOME_FIELDS = ACCOUNT_FIELDS[1:]

# Unix time of the last reconciliation pass that finished; the ingress exports it at scrape time.
RECONCILE_LAST_SUCCESS_KEY = f"{KEY_PREFIX}reconcile:last_success"


# What reconciliation compares with: run ids received per rule, rules seen, deliveries per rule
# (`lswh replay --rule`); written by the job path, kept LSWH_KEEP_DAYS (workers/bookkeeping/received.py).
RULES_SEEN_KEY = f"{KEY_PREFIX}rules-seen"
# End of the last reconciliation window and when that pass started (the next pass's feedback bound).
RECONCILE_WINDOW_END_KEY = f"{KEY_PREFIX}reconcile:window_end"
RECONCILE_FEEDBACK_SINCE_KEY = f"{KEY_PREFIX}reconcile:feedback_since"
RECONCILE_JOB = "workers.reconcile.reconcile_pass"


def rule_runs_key(rule_id: str) -> str:
    return f"{KEY_PREFIX}rule-runs:{rule_id}"


def rule_deliveries_key(rule_id: str) -> str:
    return f"{KEY_PREFIX}rule-deliveries:{rule_id}"


def reconcile_period_key(index: int) -> str:
    """SET NX by the one worker that creates the pass of period `index` (all others see it taken)."""
    return f"{KEY_PREFIX}reconcile:period:{index}"


def reconcile_job_id(index: int) -> str:
    return f"reconcile-{index}"


def replay_count_key(delivery_id: str) -> str:
    """How often the delivery was replayed: each replay's job id is `replay-<id>-<n>`."""
    return f"{KEY_PREFIX}replays:{delivery_id}"


def replay_job_id(delivery_id: str, n: int) -> str:
    return f"replay-{delivery_id}-{n}"


THREAD_JOB = "workers.jobs.process_thread"


def thread_shape_logged_key(rule_id: str) -> str:
    """SET NX by the worker that logs a thread rule's first delivery shape (key names only)."""
    return f"{KEY_PREFIX}thread-shape-logged:{rule_id}"


def thread_turns_key(action_key: str) -> str:
    """Per jsonl action of a thread rule: example id -> turns of the longest read appended, so a
    shorter or stale read is not appended after it. Kept LSWH_KEEP_DAYS."""
    return f"{KEY_PREFIX}thread-turns:{action_key}"


def thread_job_id(delivery_id: str, thread_id: str) -> str:
    """A failed thread split off its delivery, named like a run (contract.run_job_id)."""
    part = thread_id if _JOB_ID_SAFE.fullmatch(thread_id) else "h" + hashlib.sha256(thread_id.encode()).hexdigest()[:32]
    return f"thread-{part}-{delivery_id}"


def thread_job_description(delivery_id: str, thread_id: str) -> str:
    return f"thread {thread_id} of delivery {delivery_id}"


def delivery_job_id(delivery_id: str) -> str:
    return f"delivery-{delivery_id}"


# RQ accepts only these characters in a job id; the ingress accepts any non-empty run id.
_JOB_ID_SAFE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def run_job_id(delivery_id: str, run_id: str) -> str:
    """The run id itself where RQ allows it (every LangSmith run id); any other string the
    ingress accepted is named by its hash, so splitting it off can never fail."""
    part = run_id if _JOB_ID_SAFE.fullmatch(run_id) else "h" + hashlib.sha256(run_id.encode()).hexdigest()[:32]
    return f"run-{part}-{delivery_id}"


def delivery_job_description(delivery_id: str, runs: int) -> str:
    return f"delivery {delivery_id} ({runs} runs)"


def run_job_description(delivery_id: str, run_id: str) -> str:
    return f"run {run_id} of delivery {delivery_id}"


def retry_intervals(retries: int, base_seconds: int, rng: random.Random | None = None) -> list[int]:
    """Exponential backoff, about 3x per step, with +-25% jitter so retries do not stampede."""
    rng = rng or random.Random()
    return [max(1, round(base_seconds * 3**n * rng.uniform(0.75, 1.25))) for n in range(retries)]
