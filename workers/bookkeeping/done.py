"""Which (action, run) pairs of a delivery are done: a Redis hash per delivery.

A run can go to several actions; when one of them fails (an annotation queue answers 503), the
retry must redo that one alone: not write the example again, and above all not add the run to
the queue twice (LangSmith does not de-duplicate queue items). The hash maps
"<action key>:<run id>" to the action's outcome, so a retry also knows what the finished actions
came to (the run's outcome is the worst of all of them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis

from lswh_core import contract


def field(action_key: str, run_id: str) -> str:
    return f"{action_key}:{run_id}"


def read(connection: redis.Redis, delivery_id: str, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """{(action key, run id): outcome} for the pairs among `pairs` already done."""
    wanted = list(pairs)
    if not wanted:
        return {}
    values = connection.hmget(contract.actions_done_key(delivery_id), [field(*pair) for pair in wanted])
    return {pair: (value.decode() if isinstance(value, bytes) else str(value))
            for pair, value in zip(wanted, values, strict=True) if value is not None}


def record(connection: redis.Redis, delivery_id: str, outcomes: Mapping[tuple[str, str], str], *,
           ttl_seconds: int) -> None:
    """Mark the pairs done with their outcomes, in one round trip."""
    if not outcomes:
        return
    key = contract.actions_done_key(delivery_id)
    with connection.pipeline() as pipe:
        pipe.hset(key, mapping={field(*pair): outcome for pair, outcome in outcomes.items()})
        pipe.expire(key, ttl_seconds)
        pipe.execute()
