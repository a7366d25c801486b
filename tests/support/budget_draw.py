"""A separate OS process drawing from a shared rate budget (tests/test_budget.py).

    python -m tests.support.budget_draw REDIS_URL API_KEY LIMITS MARGIN START_KEY ACTION...

LIMITS is an LSWH_LANGSMITH_RATE_LIMITS value. The process prints {"ready": true}, waits for a
token on the Redis list START_KEY (so several processes start drawing together), then runs each
ACTION in order: `draw:ROUTE:N` (acquire N times) or `limited:ROUTE` (report a 429). It prints one
JSON line per grant ({"route", "at" (Redis time, s), "waited", "tries"}), per 429 reported
({"limited": route, "paused_here": bool}) and {"done": true} at the end.
"""

from __future__ import annotations

import json
import sys

import redis

from workers.langsmith.budget import Grant, RateBudget, parse_limits


class CountingBudget(RateBudget):
    """The real budget, counting its Redis attempts and remembering when each grant was made."""

    tries = 0
    last: Grant | None = None

    def try_acquire(self, route: str) -> Grant:
        grant = super().try_acquire(route)
        self.tries += 1
        self.last = grant
        return grant


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(argv: list[str]) -> int:
    url, api_key, limits, margin, start_key, *actions = argv
    connection = redis.Redis.from_url(url)
    pauses: list[str] = []
    budget = CountingBudget(connection, api_key, parse_limits(limits), margin_seconds=float(margin),
                            on_pause=lambda route, seconds: pauses.append(route))
    emit(ready=True)
    if connection.blpop([start_key], timeout=60) is None:
        emit(error="no start token")
        return 1
    for action in actions:
        kind, route, *rest = action.split(":")
        if kind == "draw":
            for _ in range(int(rest[0])):
                before = budget.tries
                waited = budget.acquire(route)
                assert budget.last is not None and budget.last.granted
                emit(route=route, at=budget.last.at, waited=waited, tries=budget.tries - before)
        elif kind == "limited":
            before = len(pauses)
            budget.rate_limited(route)
            emit(limited=route, paused_here=len(pauses) > before)
        else:
            raise SystemExit(f"unknown action {action!r}")
    emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
