"""`lswh backfill`: the runs a rule matched in a window, read through the API and fed through the
delivery job path (workers/flow/synthetic.py), so runs already written stay unchanged and nothing is
written twice. Runs are listed with their inputs and outputs, a page of up to 1,000 at a time, and
each page is enqueued as soon as it is read, its data inline: the job path reads no run again
(only feedback, for corrections, and the examples already written). It needs workers running
(`lswh worker`, or `lswh dev`): it enqueues, then waits on each synthetic delivery's accounting and
shows a progress bar on a terminal.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from lswh_core import contract
from lswh_core.settings import Settings

POLL_SECONDS = 0.5
# Said once when no worker is registered while runs wait: the command would otherwise sit silent.
NO_WORKER_HINT = "no worker is running: start `lswh worker` (or `lswh dev`); the runs wait in the queue"


class BackfillRefused(Exception):
    """The rule cannot be backfilled as asked (unknown, disabled, sampled); exit 2."""


@dataclass
class Tally:
    found: int = 0
    enqueued: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def settled(self) -> int:
        return sum(self.outcomes[name] for name in contract.RUN_OUTCOME_FIELDS)

    def line(self) -> str:
        o = self.outcomes
        return (f"found {self.found}, enqueued {self.enqueued}, already present {o['unchanged']}, "
                f"written {o['written']}, updated {o['updated']}, skipped {o['skipped']}, failed {o['failed']}")


def check_rule(rule: Any, rule_id: str, *, ignore_sampling: bool) -> None:
    """Raise BackfillRefused unless the rule may be backfilled."""
    if rule is None:
        raise BackfillRefused(f"no automation rule {rule_id} in this LangSmith workspace (GET /api/v2/runs/rules)")
    if not rule.is_enabled:
        raise BackfillRefused(f"rule {rule_id} is disabled: enable it in LangSmith first, or it would get runs "
                              "it no longer sends")
    if getattr(rule, "group_by", None):
        # Backfill lists the runs a rule's filter matches: for a rule over whole threads that would
        # write runs the rule never matched (issue 16). Thread rules get their threads by delivery.
        raise BackfillRefused(f"rule {rule_id} matches whole threads (group_by {rule.group_by}), not runs: "
                              "lswh backfill cannot backfill it (its deliveries are processed by thread)")
    if rule.sampling_rate < 1 and not ignore_sampling:
        raise BackfillRefused(
            f"rule {rule_id} samples {rule.sampling_rate:g} of the runs it matches, so a backfill would write runs "
            "the rule never chose; pass --ignore-sampling to write every matching run anyway")
    if not (rule.project_id or rule.dataset_id):
        raise BackfillRefused(f"rule {rule_id} has neither a project nor a dataset to read runs from")


def parse_time(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def run(rule_id: str, start: dt.datetime, end: dt.datetime, *, dry_run: bool = False, ignore_sampling: bool = False,
        out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    from tqdm import tqdm

    from workers.bookkeeping import accounting
    from workers.flow import synthetic
    from workers.runtime import Runtime

    out, err = out or sys.stdout, err or sys.stderr
    settings = Settings.from_env()
    runtime = Runtime(settings)
    langsmith = runtime.langsmith
    rule = next(iter(runtime.run(langsmith.rules(ids=[rule_id]))), None)
    check_rule(rule, rule_id, ignore_sampling=ignore_sampling)
    assert rule is not None
    tally = Tally()
    bar = tqdm(desc=f"rule {rule_id[:8]}", unit="run", file=err, disable=not err.isatty(), dynamic_ncols=True)

    feeder = synthetic.Feeder(runtime.redis, settings, rule_id, source="backfill", start=start, end=end)

    async def listing() -> None:
        async for locator in langsmith.match_runs(rule, start=start, end=end, with_data=not dry_run):
            tally.found += 1
            bar.set_postfix_str(tally.line(), refresh=False)
            bar.update(1)  # while listing, the bar counts runs found; then runs settled
            if not dry_run:
                closed = feeder.push(locator.as_run())
                if closed is not None:  # Redis on the loop: workers/runtime.py says why
                    tally.enqueued += feeder.send(closed)
        if not dry_run:
            tally.enqueued += feeder.finish()

    try:
        runtime.run(listing())
        window = f"{start.isoformat()} to {end.isoformat()}"
        if dry_run:
            bar.close()
            print(f"rule {rule_id}, {window}: {tally.found} runs match; dry run, nothing enqueued", file=out)
            return 0
        fed = feeder.fed
        bar.reset(total=tally.enqueued)
        try:
            _wait(runtime.redis, fed, tally, bar, err, accounting.read)
        except KeyboardInterrupt:
            bar.close()
            print(f"lswh backfill: stopped waiting; the {tally.enqueued} enqueued runs are still processed by the "
                  f"workers (`lswh status DELIVERY_ID` for each of: {', '.join(d for d, _ in fed)})", file=err)
            return 130
    finally:
        bar.close()
    print(f"rule {rule_id}, {window}: {tally.line()}", file=out)
    return 1 if tally.outcomes["failed"] else 0


def _wait(redis: Any, fed: Sequence[tuple[str, int]], tally: Tally, bar: Any, err: IO[str], read: Any) -> None:
    """Until every enqueued run has an outcome; a delivery job that failed as a whole counts its
    unsettled runs as failed."""
    from rq import Queue, Worker
    from rq.job import Job, JobStatus

    hinted = False
    while True:
        outcomes: Counter[str] = Counter()
        for delivery_id, runs in fed:
            figures = read(redis, delivery_id) or {}
            settled = {name: figures.get(name, 0) for name in contract.RUN_OUTCOME_FIELDS}
            outcomes.update(settled)
            job = Job.fetch(contract.delivery_job_id(delivery_id), connection=redis)
            if job.get_status(refresh=False) == JobStatus.FAILED:
                outcomes["failed"] += runs - sum(settled.values())
        tally.outcomes = outcomes
        bar.n = min(tally.settled, tally.enqueued)
        bar.set_postfix_str(tally.line())
        if tally.settled >= tally.enqueued:
            return
        if not hinted and not Worker.count(queue=Queue(contract.QUEUE, connection=redis)):
            print(f"lswh backfill: {NO_WORKER_HINT}", file=err)
            hinted = True
        time.sleep(POLL_SECONDS)
