"""Per delivery, in runs: received = written + updated + unchanged + skipped + failed + pending.

Kept in a Redis hash (`lswh_core.contract.accounting_key`) for LSWH_KEEP_DAYS, read by
`lswh status DELIVERY_ID`. Pending is what is left: it is never stored, so a worker killed
mid-slice leaves the sum open (pending) rather than wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import redis

from lswh_core import contract

OUTCOMES = ("written", "updated", "unchanged", "skipped", "failed")


def record_received(connection: redis.Redis, delivery_id: str, runs: int, *, keep_seconds: int) -> None:
    """Once per delivery (the first attempt sets it; retries and replays do not add to it)."""
    key = contract.accounting_key(delivery_id)
    with connection.pipeline() as pipe:
        pipe.hsetnx(key, "received", runs)
        pipe.expire(key, keep_seconds)
        pipe.execute()


def record_outcomes(connection: redis.Redis, delivery_id: str, counts: Mapping[str, int], *,
                    keep_seconds: int) -> None:
    """Add final outcomes; a requeued run that lands moves from failed (-1) to its outcome."""
    unknown = set(counts) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"unknown outcomes {sorted(unknown)}")
    changes = {name: n for name, n in counts.items() if n}
    if not changes:
        return
    key = contract.accounting_key(delivery_id)
    with connection.pipeline() as pipe:
        for name, n in changes.items():
            pipe.hincrby(key, name, n)
        pipe.expire(key, keep_seconds)
        pipe.execute()


def read(connection: redis.Redis, delivery_id: str) -> dict[str, int] | None:
    """The delivery's figures with `pending` worked out, or None when nothing was recorded."""
    raw = connection.hgetall(contract.accounting_key(delivery_id))
    if not raw:
        return None
    figures = Counter({k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()})
    result = {"received": figures["received"], **{name: figures[name] for name in OUTCOMES}}
    result["pending"] = result["received"] - sum(result[name] for name in OUTCOMES)
    return result
