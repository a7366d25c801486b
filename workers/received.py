"""The "received" index: which runs of each rule reached the job path, and in which deliveries.

Reconciliation (workers/reconcile.py) calls a run the rule matched but that is not here a lost
delivery; `lswh replay --rule` finds a rule's deliveries here. A run skipped on purpose (outputs
policy, filters) has been received all the same, so it is never counted lost. Members are scored
by when they were received and trimmed after LSWH_KEEP_DAYS; each key expires with them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis as redis_py

from lswh_core import contract

# ZADD arguments per command: a 10,000-run delivery is ten commands, not one huge one.
CHUNK = 1_000


def record(redis: redis_py.Redis, rule_id: str | None, runs: Sequence[dict[str, Any]], delivery_id: str,
           keep_seconds: int) -> None:
    """Every run id of the delivery as received for its rule, and the delivery among the rule's."""
    if not rule_id:
        return
    stamp = time.time()
    oldest = stamp - keep_seconds
    ids = [str(run["id"]) for run in runs]
    runs_key, deliveries_key = contract.rule_runs_key(rule_id), contract.rule_deliveries_key(rule_id)
    with redis.pipeline(transaction=False) as pipe:
        for start in range(0, len(ids), CHUNK):
            pipe.zadd(runs_key, dict.fromkeys(ids[start:start + CHUNK], stamp))
        pipe.zremrangebyscore(runs_key, "-inf", oldest)
        pipe.expire(runs_key, keep_seconds)
        pipe.zadd(deliveries_key, {delivery_id: stamp})
        pipe.zremrangebyscore(deliveries_key, "-inf", oldest)
        pipe.expire(deliveries_key, keep_seconds)
        pipe.sadd(contract.RULES_SEEN_KEY, rule_id)
        pipe.expire(contract.RULES_SEEN_KEY, keep_seconds)
        pipe.execute()


def not_received(redis: redis_py.Redis, rule_id: str, run_ids: Iterable[str]) -> list[str]:
    """The run ids (in order) never received for the rule within LSWH_KEEP_DAYS."""
    ids = list(run_ids)
    missing: list[str] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        scores = redis.zmscore(contract.rule_runs_key(rule_id), chunk)
        missing.extend(run_id for run_id, score in zip(chunk, scores, strict=True) if score is None)
    return missing


def rules_seen(redis: redis_py.Redis) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else str(m) for m in redis.smembers(contract.RULES_SEEN_KEY)}


def deliveries_since(redis: redis_py.Redis, rule_id: str, since: float) -> list[str]:
    """Delivery ids of the rule received at or after unix time `since`, oldest first."""
    found = redis.zrangebyscore(contract.rule_deliveries_key(rule_id), since, "+inf")
    return [m.decode() if isinstance(m, bytes) else str(m) for m in found]
