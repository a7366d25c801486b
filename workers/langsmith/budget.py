"""One LangSmith rate budget per API key, shared in Redis by every worker on every host.

LangSmith limits each API key per route (lswh_core/ratelimits.py). Forty workers on ten hosts
share one key, so the budget cannot live in a process: each route's budget is a sliding-window
log in Redis, and a request may go out only once the log grants it.

Why a sliding-window log, not GCRA. The budget must never say yes where a strict sliding-window
server (the stricter model of LangSmith's balancer) would answer 429: in no interval of
`window` seconds may more than `requests` requests arrive. The log keeps the time of every grant
in the window and grants only while fewer than `requests` are younger than `window`: that is
that property exactly, bursts included (30 run reads at once, then none until the first ages
out). GCRA with a burst of `requests` admits up to 2 x requests - 1 in some window (the burst,
then one per emission interval while the burst's debt drains), and GCRA without a burst
forbids the bursts LangSmith allows (one run read every 2 s). A fixed-window server is also
satisfied, since its windows are intervals like any other. The log costs one sorted-set entry
per request in the window (at most MAX_REQUESTS, lswh_core/ratelimits.py).

The safety margin. A grant happens a moment before the request reaches LangSmith, and that
moment varies (connection set-up, scheduling). The log's window is `window + margin`: if every
request arrives between d and d + margin after its grant, the requests LangSmith sees in any
window of `window` seconds were granted within `window + margin`, so there are at most
`requests` of them. 0.5 s costs 5 % of a 10 s window and under 1 % of a 60 s one.

One clock. Every decision uses Redis' TIME inside the script that makes it, so hosts whose clocks
disagree still share one window. Each acquire is one Lua script (atomic: no two workers can take
the last slot). Keys are named by a hash of the API key, never the key, and all expire.

A 429 means LangSmith's window is full anyway (other clients of the key, a budget set too high).
LangSmith sends no Retry-After, so `rate_limited` pauses that route for every worker for a whole
window (plus margin) from the latest 429; the process that starts a pause logs one line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from typing import NamedTuple

import redis

from lswh_core.contract import KEY_PREFIX
from lswh_core.ratelimits import DEFAULT_LIMITS, ROUTES, Limit, format_limits, parse_limits, route_of

__all__ = ["DEFAULT_LIMITS", "SAFETY_MARGIN_SECONDS", "Grant", "Limit", "RateBudget", "budget_keys", "format_limits",
           "key_hash", "parse_limits", "route_of"]

log = logging.getLogger(__name__)

SAFETY_MARGIN_SECONDS = 0.5
# A log outlives its newest entry's window by this much, so an idle key disappears on its own.
_LOG_TTL_SLACK_MS = 1_000
# Sleep this much past the moment Redis named, so the retry does not land a hair too early.
_WAKE_SLACK_SECONDS = 0.002

# KEYS: log (sorted set of grants, scored by Redis time in ms), pause (exists while paused).
# ARGV: requests, window in ms (margin included), a unique member, the log's TTL in ms.
# Returns {granted 0/1, ms to wait before asking again, Redis time in ms}.
_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return {0, paused, now}
end
local requests = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local held = redis.call('ZCARD', KEYS[1])
if held < requests then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {1, 0, now}
end
-- A slot frees when this grant ages out (the oldest, unless the limit was lowered meanwhile).
local freeing = redis.call('ZRANGE', KEYS[1], held - requests, held - requests, 'WITHSCORES')
return {0, math.max(1, tonumber(freeing[2]) + window - now), now}
"""

# KEYS: pause. ARGV: pause in ms. Sets or extends the pause to end ARGV[1] ms from now.
# Returns 1 when no pause was running (the caller logs it), else 0.
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
if left > 0 then return 0 end
return 1
"""


class Grant(NamedTuple):
    granted: bool
    wait_seconds: float  # until a slot frees or the pause ends; 0 when granted
    at: float  # Redis' clock when decided, in seconds since the epoch


def key_hash(api_key: str) -> str:
    """Names a key's budgets without naming the key (a Redis dump or MONITOR must not leak it)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def budget_keys(api_key: str, route: str) -> tuple[str, str]:
    """The route's grant log and its pause flag; the braces keep both in one Redis Cluster slot."""
    base = f"{KEY_PREFIX}budget:{{{key_hash(api_key)}:{route}}}"
    return f"{base}:log", f"{base}:pause"


class RateBudget:
    """Per-route request budgets of one API key, shared by every process using the same Redis.

    `acquire` / `acquire_async` before each request to LangSmith (each attempt, retries included);
    `rate_limited` after each 429. A route absent from `limits` (`off`) is not budgeted.
    """

    def __init__(self, redis: redis.Redis, api_key: str, limits: Mapping[str, Limit], *,
                 on_pause: Callable[[str, float], None] | None = None,
                 margin_seconds: float = SAFETY_MARGIN_SECONDS) -> None:
        if margin_seconds < 0:
            raise ValueError("margin_seconds must not be negative")
        self._acquire = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)
        self._keys = {route: budget_keys(api_key, route) for route in ROUTES}
        self._limits = dict(limits)
        self._margin_ms = math.ceil(margin_seconds * 1000)
        self._on_pause = on_pause

    def window_ms(self, route: str) -> int:
        """How long a grant counts against its route, and how long a 429 pauses it."""
        return math.ceil(self._limits[route].window_seconds * 1000) + self._margin_ms

    def try_acquire(self, route: str) -> Grant:
        """One atomic attempt: take a slot of `route` if one is free, else say how long to wait."""
        limit = self._limit(route)
        if limit is None:
            return Grant(True, 0.0, time.time())
        window = self.window_ms(route)
        granted, wait_ms, now_ms = self._acquire(
            keys=self._keys[route], args=[limit.requests, window, uuid.uuid4().hex, window + _LOG_TTL_SLACK_MS])
        return Grant(bool(granted), int(wait_ms) / 1000, int(now_ms) / 1000)

    def _draw(self, route: str) -> Generator[float, None, float]:
        """Drawing budget for `route`, for either kind of caller: yields how long to sleep before
        the next try (until the earliest moment a slot can free), returns the seconds waited for
        budget (0.0 when there was some at once). Never gives up: the job's own timeout is the
        only bound."""
        started: float | None = None
        while True:
            grant = self.try_acquire(route)
            if grant.granted:
                return 0.0 if started is None else time.monotonic() - started
            started = time.monotonic() if started is None else started
            yield grant.wait_seconds + _WAKE_SLACK_SECONDS

    def acquire(self, route: str) -> float:
        """Block until `route` has budget, then take it; the seconds waited (see `_draw`)."""
        draw = self._draw(route)
        try:
            while True:
                time.sleep(next(draw))
        except StopIteration as done:
            return float(done.value)

    async def acquire_async(self, route: str) -> float:
        """`acquire` for an asyncio loop: the wait for budget is an asyncio.sleep, so an empty
        budget does not stall the loop's other work; the Redis call itself is made on the loop
        (a local round trip, workers/runtime.py says why)."""
        draw = self._draw(route)
        try:
            while True:
                await asyncio.sleep(next(draw))
        except StopIteration as done:
            return float(done.value)

    def rate_limited(self, route: str) -> None:
        """LangSmith answered 429 on `route`: pause it for every worker until a whole window has
        passed. The process that starts the pause logs it (and calls on_pause); 429s that arrive
        during a pause extend it silently."""
        if self._limit(route) is None:
            return
        pause_ms = self.window_ms(route)
        started = self._pause(keys=[self._keys[route][1]], args=[pause_ms])
        if started:
            seconds = pause_ms / 1000
            log.warning("LangSmith answered 429 on %s: every worker of this API key pauses it for %.1f s "
                        "(budget %s)", route, seconds, self._limits[route])
            if self._on_pause is not None:
                self._on_pause(route, seconds)

    def _limit(self, route: str) -> Limit | None:
        if route not in ROUTES:
            raise ValueError(f"unknown rate-limit route {route!r}; routes: {', '.join(ROUTES)}")
        return self._limits.get(route)
