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
    deliveries_key = contract.rule_deliveries_key(rule_id)
    with redis.pipeline(transaction=False) as pipe:
        _add_runs(pipe, rule_id, [str(run["id"]) for run in runs], stamp, keep_seconds)
        pipe.zadd(deliveries_key, {delivery_id: stamp})
        pipe.zremrangebyscore(deliveries_key, "-inf", oldest)
        pipe.expire(deliveries_key, keep_seconds)
        pipe.sadd(contract.RULES_SEEN_KEY, rule_id)
        pipe.expire(contract.RULES_SEEN_KEY, keep_seconds)
        pipe.execute()


def record_runs(redis: redis_py.Redis, rule_id: str, run_ids: Sequence[str], keep_seconds: int) -> None:
    """Run ids as received before their delivery job runs: reconciliation marks the lost runs it
    has just enqueued, so a pass overlapping its window before that job ran does not count them
    lost again."""
    with redis.pipeline(transaction=False) as pipe:
        _add_runs(pipe, rule_id, run_ids, time.time(), keep_seconds)
        pipe.execute()


def _add_runs(pipe: Any, rule_id: str, ids: Sequence[str], stamp: float, keep_seconds: int) -> None:
    key = contract.rule_runs_key(rule_id)
    for start in range(0, len(ids), CHUNK):
        pipe.zadd(key, dict.fromkeys(ids[start:start + CHUNK], stamp))
    pipe.zremrangebyscore(key, "-inf", stamp - keep_seconds)
    pipe.expire(key, keep_seconds)


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
