"""Content dedup (opt-in per rule): skip a run whose transformed inputs this pipeline already wrote
to the same dataset, as another run's example.

The fingerprint is the SHA-256 of the inputs as canonical JSON (keys sorted, no spaces, UTF-8), so
key order and formatting do not matter, values do (1 and 1.0 differ, as they do in JSON).

The memory is a Redis hash per dataset, fingerprint -> run id of the run that claimed it, shared by
every worker. A hash rather than a set: a run that claimed a fingerprint and is retried (or
redelivered, or backfilled) must find its own claim and go on writing, not skip itself as a
duplicate of itself. HSETNX makes the claim atomic across workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import redis

from lswh_core.contract import KEY_PREFIX

# Delete the claim only if it is still ours: a compare-and-delete Redis runs atomically.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def dedup_key(dataset: str) -> str:
    return f"{KEY_PREFIX}dedup:{dataset}"


def content_hash(inputs: Any) -> str:
    """The fingerprint of an example's inputs (after transforms)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def claim_many(connection: redis.Redis, dataset: str, fingerprints: Mapping[str, str], *,
               ttl_seconds: int) -> dict[str, str | None]:
    """Claim each run's fingerprint ({run id: fingerprint}) in `dataset`, for a slice of runs in
    one round trip: {run id: None when it may write (the fingerprint is new, or already this
    run's), else the run id that wrote these inputs first}. Two runs of the slice with the same
    inputs: the first in order writes. Every claim pushes the dataset's memory out to
    `ttl_seconds` (Redis keeps nothing forever)."""
    if not fingerprints:
        return {}
    key = dedup_key(dataset)
    pipe = connection.pipeline(transaction=True)
    for run_id, fingerprint in fingerprints.items():
        pipe.hsetnx(key, fingerprint, run_id)
        pipe.hget(key, fingerprint)
    pipe.expire(key, ttl_seconds)
    answers = pipe.execute()
    owners = answers[1:-1:2]
    result: dict[str, str | None] = {}
    for run_id, owner in zip(fingerprints, owners, strict=True):
        owner_id = owner.decode() if isinstance(owner, bytes) else owner
        result[run_id] = None if owner_id == run_id else owner_id
    return result


def release(connection: redis.Redis, dataset: str, fingerprint: str, run_id: str) -> bool:
    """Give a claim back when the run's write failed for good, so a later run with the same inputs
    is not skipped as a duplicate of an example that was never written. Only the owner releases."""
    return bool(connection.eval(_RELEASE, 1, dedup_key(dataset), fingerprint, run_id))
