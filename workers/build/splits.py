"""Which split (train, test, ...) a run's example belongs to: a pure function of the run id.

Every worker, redelivery, backfill and requeue computes the same answer without asking anyone,
so nothing is stored. The run id is hashed (SHA-256, not Python's per-process `hash`) to a point
in [0, 1) and the splits, in name order, cover [0, 1) by weight: the same weights always give the
same split, whatever order the rules file lists them in.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

_SCALE = float(2**64)


def split_point(run_id: str) -> float:
    """A uniform point in [0, 1) from the run id. A UUID's text form is normalised first, so the
    same run spelled in upper case or without dashes lands in the same place."""
    try:
        key = str(uuid.UUID(run_id))
    except ValueError:
        key = run_id
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign_split(run_id: str, splits: Sequence[tuple[str, float]]) -> str:
    """The split `run_id` falls in. `splits` are (name, weight) with positive weights summing to 1
    (the rules file checks that); any float rounding left at the top goes to the last split."""
    if not splits:
        raise ValueError("no splits to assign from")
    ordered = sorted(splits)
    point = split_point(run_id)
    edge = 0.0
    for name, weight in ordered:
        edge += weight
        if point < edge:
            return name
    return ordered[-1][0]
