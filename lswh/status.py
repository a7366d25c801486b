"""`lswh status [DELIVERY_ID]` and `lswh requeue --reason TEXT`: what the queue holds, who works
on it, what failed and why (grouped, with the command that requeues each group), and where the
runs of one delivery went.

A failed job's reason is the last line of its exception. Reasons differ in ids and numbers (a
run id, a status code), so they are grouped with those masked (lswh_core.masks); the printed
`--reason` is the group's masked text, which matches every reason of that group and only those.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson
import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry

from ingress.metrics import QueueState, read_queue
from lswh_core import contract
from lswh_core.masks import mask, pattern
from lswh_core.redis import async_redis
from workers.bookkeeping.accounting import Account, read_account

# A registry this large is a backlog to fix, not to list: reading every reason costs a round trip.
MAX_FAILED_READ = 10_000
_DELIVERY_ID = re.compile(r"^[0-9a-f]{32}$")
_RUNS_IN_DESCRIPTION = re.compile(r"\((\d+) runs?\)")


# --- pure: reasons, groups, the account line ----------------------------------------------------


def reason_of(exc_string: str | None) -> str:
    """The last non-empty line of a stored exception: `module.Error: run <id>: why`."""
    lines = [line.strip() for line in (exc_string or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no reason recorded)"


@dataclass
class FailedGroup:
    reason: str  # masked
    job_ids: list[str] = field(default_factory=list)

    @property
    def requeue_command(self) -> str:
        return f"lswh requeue --reason {shlex.quote(self.reason)}"


def group_failed(reasons: Mapping[str, str]) -> list[FailedGroup]:
    """Failed jobs by masked reason, largest group first."""
    groups: dict[str, FailedGroup] = {}
    for job_id, reason in reasons.items():
        masked = mask(reason)
        groups.setdefault(masked, FailedGroup(masked)).job_ids.append(job_id)
    return sorted(groups.values(), key=lambda g: (-len(g.job_ids), g.reason))


def matching(text: str, reasons: Mapping[str, str]) -> list[str]:
    """Job ids whose reason contains `text`; placeholders in it (<uuid>, <hex>, <n>) match any id or number."""
    wanted = pattern(text)
    return [job_id for job_id, reason in reasons.items() if wanted.search(reason)]


def account_line(account: Account) -> str:
    parts = " + ".join(f"{figure} {name}" for name, figure in account.figures().items() if name != "received")
    text = f"{account.received} runs received = {parts}"
    if account.pending < 0:
        text += f"  DOES NOT ADD UP: {-account.pending} more outcomes than runs received"
    return text


def worker_state(state: str) -> str:
    """A worker's RQ state as the operator reads it."""
    if state == contract.WORKER_WAITING_INFO:
        return "waiting for LangSmith /info — takes no jobs"
    return state


# --- reading Redis -------------------------------------------------------------------------------


def failed_reasons(connection: redis.Redis, limit: int = MAX_FAILED_READ) -> dict[str, str]:
    job_ids = failed_registry(connection).get_job_ids(0, limit - 1)
    reasons: dict[str, str] = {}
    for job_id, job in zip(job_ids, Job.fetch_many(job_ids, connection=connection), strict=True):
        if job is None:
            continue  # expired between the two reads
        result = job.latest_result()
        reasons[job_id] = reason_of(result.exc_string if result is not None else None)
    return reasons


def queue_state(redis_url: str) -> QueueState:
    """The same figures /metrics exports, read the same way."""

    async def read() -> QueueState:
        client = async_redis(redis_url, max_connections=2)
        try:
            return await read_queue(client)
        finally:
            await client.aclose()

    return asyncio.run(read())


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def overview(connection: redis.Redis, redis_url: str) -> list[str]:
    state = queue_state(redis_url)
    if not state.redis_up:
        raise redis.exceptions.ConnectionError("Redis did not answer")
    oldest = f", oldest queued {_age(state.oldest_age)} ago" if state.depth else ""
    lines = [f"queue {contract.QUEUE}: {state.depth} queued{oldest}; {state.started} started; "
             f"{state.scheduled} scheduled retries; {state.failed} failed"]
    workers = Worker.all(queue=Queue(contract.QUEUE, connection=connection))
    lines.append(f"workers: {len(workers)}")
    for worker in sorted(workers, key=lambda w: w.name):
        current = worker.get_current_job_id() or "-"
        lines.append(f"  host {worker.hostname or '?'}  {worker_state(worker.get_state())}  current job {current}  "
                     f"(worker {worker.name})")
    reasons = failed_reasons(connection)
    groups = group_failed(reasons)
    lines.append(f"failed jobs by reason: {len(reasons)} in {len(groups)} groups"
                 + (f" (first {MAX_FAILED_READ} read)" if len(reasons) >= MAX_FAILED_READ else ""))
    for group in groups:
        lines += [f"  {len(group.job_ids)} x {group.reason}",
                  f"      e.g. {group.job_ids[0]}",
                  f"      {group.requeue_command}"]
    return lines


def delivery_account(connection: redis.Redis, delivery_id: str) -> Account | None:
    """From its accounting hash; before a worker has opened one, all its runs are pending (read
    from the stored body, or the job's description once the body has expired)."""
    account = read_account(connection, delivery_id)
    if account is not None:
        return account
    body = connection.get(contract.delivery_key(delivery_id))
    if body is not None:
        runs = orjson.loads(body).get("runs", [])
        return Account(received=len({str(r.get("id")) for r in runs if isinstance(r, dict)}))
    description = connection.hget(Job.key_for(contract.delivery_job_id(delivery_id)), "description")
    found = _RUNS_IN_DESCRIPTION.search(description.decode()) if description else None  # type: ignore[union-attr]
    return Account(received=int(found.group(1))) if found else None


def delivery_lines(connection: redis.Redis, delivery_id: str) -> tuple[list[str], int]:
    """The report and the exit code: 0 when the runs add up, 1 when not, or when unknown."""
    account = delivery_account(connection, delivery_id)
    if account is None:
        return [f"delivery {delivery_id}: not known here (accounting is kept LSWH_KEEP_DAYS)"], 1
    return [f"delivery {delivery_id}: {account_line(account)}"], 0 if account.pending >= 0 else 1


def valid_delivery_id(text: str) -> bool:
    return bool(_DELIVERY_ID.match(text))


def failed_registry(connection: redis.Redis) -> FailedJobRegistry:
    return FailedJobRegistry(queue=Queue(contract.QUEUE, connection=connection))


def requeue_by_reason(connection: redis.Redis, text: str) -> tuple[int, int]:
    """(requeued, matched): a job may leave the registry between the read and the requeue."""
    job_ids = matching(text, failed_reasons(connection))
    requeued, _ = requeue(failed_registry(connection), job_ids)
    return requeued, len(job_ids)


def requeue(registry: FailedJobRegistry, job_ids: Iterable[str]) -> tuple[int, list[str]]:
    """(requeued, the ids that are not in the failed registry: never there, or gone meanwhile)."""
    from rq.exceptions import InvalidJobOperation, NoSuchJobError

    done, missing = 0, []
    for job_id in job_ids:
        try:
            registry.requeue(job_id)
            done += 1
        except (InvalidJobOperation, NoSuchJobError):
            missing.append(job_id)
    return done, missing
