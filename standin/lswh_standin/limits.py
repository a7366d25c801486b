"""LangSmith Cloud's per-key request limits, enforced with a strict sliding window.

Source: docs "API rate limits" (https://docs.langchain.com/langsmith/cloud-rate-limits), the table
"Match / Endpoint (method) | Identity key | US prod limit": counts per interval in seconds, keyed by
`x-api-key`. Only the rows the pipeline can meet are modelled; the first matching row wins, in table
order. A 429 from these limits carries no `Retry-After` (the docs name none, and the load balancer
sends none).

The SmithDB-backed v2 runs endpoints have rows of their own since August 2026: docs PR
langchain-ai/docs#5652 ("Document dedicated rate limits for SmithDB-backed v2 runs endpoints", merged
2026-08-24) gives `POST /api/v2/runs/query` 300 per 10 s (was the run query's 15 per 10 s) and
`GET /api/v2/runs/{id}` 300 per 10 s (was the run lookup's 30 per 60 s), keyed by `x-api-key` like the
v1 rows, answered like every other row: 429, no `Retry-After`.

Decisions where the table is silent, each the stricter reading so that a client that stays under the
stand-in's limits stays under Cloud's:
- The v1 and v2 rows are separate windows (the PR gives the v2 endpoints "dedicated" limits).
- The window slides: at no moment have more than `count` requests been admitted in the last `seconds`
  (the docs' older text describes a window that restarts; a sliding one is never looser). A refused
  request does not use up budget.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


@dataclass(frozen=True)
class Limit:
    count: int
    seconds: float


# name -> the docs' figure for the US and EU regions (identical for these rows).
CLOUD_LIMITS: dict[str, Limit] = {
    "info": Limit(2000, 10),  # OPTIONS, /info: by IP
    "run_query": Limit(15, 10),  # POST /runs/query, /api/v1/runs/query, x-api-key
    "v2_run_query": Limit(300, 10),  # POST /api/v2/runs/query: langchain-ai/docs#5652 (2026-08-24)
    "v2_run_lookup": Limit(300, 10),  # GET /api/v2/runs/{uuid}: langchain-ai/docs#5652 (2026-08-24)
    "run_patch": Limit(2000, 10),  # PATCH containing /runs
    "run_lookup": Limit(30, 60),  # GET /runs/{uuid} or /api/v1/runs/{uuid}
    "examples_get": Limit(5000, 60),  # GET containing /examples
    "default": Limit(1000, 10),  # any request with x-api-key
}

_RUN_QUERY = re.compile(r"^(/api/v1)?/runs/query/?$")
_RUN_LOOKUP = re.compile(rf"^(/api/v1)?/runs/{UUID_RE}/?$")
_V2_RUN_QUERY = re.compile(r"^/api/v2/runs/query/?$")
_V2_RUN_LOOKUP = re.compile(rf"^/api/v2/runs/{UUID_RE}/?$")


def category(method: str, path: str) -> str:
    """Which row of the table a request falls under (the first that matches, in table order)."""
    if path.rstrip("/") == "/info" or method == "OPTIONS":
        return "info"
    if method == "POST" and _V2_RUN_QUERY.match(path):
        return "v2_run_query"
    if method == "GET" and _V2_RUN_LOOKUP.match(path):
        return "v2_run_lookup"
    if method == "POST" and _RUN_QUERY.match(path):
        return "run_query"
    if method == "PATCH" and "/runs" in path:
        return "run_patch"
    if method == "GET" and _RUN_LOOKUP.match(path):
        return "run_lookup"
    if method == "GET" and "/examples" in path:
        return "examples_get"
    return "default"


class SlidingWindows:
    """Admission per (identity, category): at most `count` admitted in any `seconds`-long stretch."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._admitted: dict[tuple[str, str], deque[float]] = {}

    def admit(self, identity: str, name: str, limit: Limit) -> bool:
        now = self._clock()
        window = self._admitted.setdefault((identity, name), deque())
        while window and window[0] <= now - limit.seconds:
            window.popleft()
        if len(window) >= limit.count:
            return False
        window.append(now)
        return True

    def clear(self) -> None:
        self._admitted.clear()
