"""`lswh replay`: process stored deliveries again, all their runs, whatever was done before
(e.g. after a rule's settings or transform changed).

The raw body is kept LSWH_REPLAY_DAYS (contract.delivery_key). A replay clears the delivery's
done set and accounting, then enqueues its delivery job again under `replay-<id>-<n>` (n counts
the delivery's replays), an id that never collides with the finished original `delivery-<id>`
nor with an earlier replay still in the dashboard. A presigned URL in the body that expired
meanwhile is not reused: the job path reads those runs through the API.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import redis as redis_py

from lswh_core import contract
from lswh_core.settings import Settings


@dataclass(frozen=True)
class Replayed:
    delivery_id: str
    job_id: str | None  # None: not replayed, see `problem`
    runs: int = 0
    problem: str | None = None


def replay(redis: redis_py.Redis, settings: Settings, delivery_ids: Iterable[str]) -> list[Replayed]:
    from workers.flow.synthetic import enqueue_job

    results = []
    for delivery_id in delivery_ids:
        raw = redis.get(contract.delivery_key(delivery_id))
        if raw is None:
            results.append(Replayed(delivery_id, None, problem="its raw body is gone (kept LSWH_REPLAY_DAYS) "
                                                                "or it was never received"))
            continue
        runs = len(orjson.loads(raw).get("runs") or [])
        with redis.pipeline() as pipe:
            # Everything recorded as done, per run and per (action, run): a replay does it all again.
            pipe.delete(contract.done_key(delivery_id), contract.actions_done_key(delivery_id),
                        contract.accounting_key(delivery_id))
            pipe.incr(contract.replay_count_key(delivery_id))
            pipe.expire(contract.replay_count_key(delivery_id), settings.replay_seconds)
            n = int(pipe.execute()[1])
        job = enqueue_job(redis, settings, delivery_id, runs, contract.replay_job_id(delivery_id, n))
        results.append(Replayed(delivery_id, job.id, runs))
    return results


def rule_deliveries(redis: redis_py.Redis, rule_id: str, since_seconds: float) -> list[str]:
    from workers.bookkeeping.received import deliveries_since

    return deliveries_since(redis, rule_id, time.time() - since_seconds)
