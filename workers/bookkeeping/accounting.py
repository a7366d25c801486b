"""Per-delivery run accounting in Redis, so `lswh status DELIVERY_ID` can show where each run of
a delivery went: received = written + updated + unchanged + skipped + failed + pending.

One hash per delivery (lswh_core.contract.accounting_key), integer fields, TTL LSWH_KEEP_DAYS.
`failed` counts runs now in the failed registry; when such a run is requeued and then lands,
`settle_requeued` moves it from failed to its outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import redis as redis_py

from lswh_core import contract


def record_received(redis: redis_py.Redis, delivery_id: str, runs: int, *, keep_seconds: int) -> None:
    """The delivery's run count, set once: a retried job does not receive its runs again."""
    key = contract.accounting_key(delivery_id)
    with redis.pipeline() as pipe:
        pipe.hsetnx(key, "received", runs)
        pipe.expire(key, keep_seconds)
        pipe.execute()


def record_outcomes(redis: redis_py.Redis, delivery_id: str, counts: Mapping[str, int], *,
                    keep_seconds: int) -> None:
    """Add runs to their outcomes (written, updated, unchanged, skipped, failed)."""
    unknown = set(counts) - set(contract.RUN_OUTCOME_FIELDS)
    if unknown:
        raise ValueError(f"not run outcomes: {sorted(unknown)}")
    key = contract.accounting_key(delivery_id)
    with redis.pipeline() as pipe:
        for outcome, n in counts.items():
            if n:
                pipe.hincrby(key, outcome, n)
        pipe.expire(key, keep_seconds)
        pipe.execute()


def settle_requeued(redis: redis_py.Redis, delivery_id: str, outcome: str, *, keep_seconds: int) -> None:
    """A requeued failed run that has now landed: one run moves from `failed` to `outcome`
    (atomically, so the sum never shows it twice or not at all)."""
    if outcome not in contract.RUN_OUTCOME_FIELDS or outcome == "failed":
        raise ValueError(f"a requeued run lands as written, updated, unchanged or skipped, not {outcome!r}")
    key = contract.accounting_key(delivery_id)
    with redis.pipeline() as pipe:  # MULTI/EXEC
        pipe.hincrby(key, "failed", -1)
        pipe.hincrby(key, outcome, 1)
        pipe.expire(key, keep_seconds)
        pipe.execute()


@dataclass(frozen=True)
class Account:
    """A delivery's figures (contract.ACCOUNT_FIELDS); `pending` is what has no outcome yet."""

    received: int = 0
    written: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def pending(self) -> int:
        return self.received - self.written - self.updated - self.unchanged - self.skipped - self.failed

    def figures(self) -> dict[str, int]:
        return {**asdict(self), "pending": self.pending}


def read_account(redis: redis_py.Redis, delivery_id: str) -> Account | None:
    """The delivery's accounting hash, or None when nothing was recorded."""
    raw = redis.hgetall(contract.accounting_key(delivery_id))
    if not raw:
        return None
    stored = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    return Account(**{name: stored.get(name, 0) for name in contract.ACCOUNT_FIELDS})


def read(redis: redis_py.Redis, delivery_id: str) -> dict[str, int] | None:
    """The delivery's figures with `pending` worked out, or None when nothing was recorded."""
    account = read_account(redis, delivery_id)
    return None if account is None else account.figures()
