"""LangSmith's per-API-key rate limits: which route a request counts against, the defaults, and
the LSWH_LANGSMITH_RATE_LIMITS format that overrides them.

Source: LangSmith docs, "API rate limits" (https://docs.langchain.com/langsmith/cloud-rate-limits),
table rows keyed by `x-api-key`, US and EU alike:

    POST /runs/query                          15 / 10    Run query (API)
    PATCH containing /runs                  2000 / 10    Run ingest
    GET /runs/{uuid} or /api/v1/runs/{uuid}   30 / 60    Run lookup ("retrieving specific runs by UUID")
    GET containing /examples                5000 / 60    Examples
    any request with x-api-key              1000 / 10    Default (API key)

Since August 2026 the SmithDB-backed v2 runs endpoints have rows of their own: langchain-ai/docs#5652
("Document dedicated rate limits for SmithDB-backed v2 runs endpoints", merged 2026-08-24):

    POST /api/v2/runs/query                  300 / 10    v2 runs query (was the run query's 15 / 10)
    GET /api/v2/runs/{uuid}                  300 / 10    v2 runs retrieve (was the lookup's 30 / 60)

Counts are requests per interval in seconds; LangSmith answers 429 past them, without Retry-After
(users ask for one: https://github.com/langchain-ai/langsmith-sdk/issues/2032).
The v1 runs query has one figure in the table, 15 / 10; no lower tier (long windows, no start
time) is published there, so none is modelled: 15 / 10 is what the table gives for every v1 query.
The SDK's v2 runs query (`POST /api/v2/runs/query`, `client.runs.query_v2`) counts as
`v2_run_query`, the v2 retrieve (`GET /api/v2/runs/{run_id}`, `client.runs.retrieve_v2`) as
`v2_run_read`; the v1 spellings (no prefix, `/api`, `/api/v1`) as `run_query` and `run_read`.

Settings written before the v2 rows existed keep their meaning: `run_query` and `run_read` in
LSWH_LANGSMITH_RATE_LIMITS governed the v2 endpoints too, so they still set `v2_run_query` and
`v2_run_read` unless those are named themselves (`run_query=60/10s` holds both queries to 60 / 10;
`run_query=60/10s,v2_run_query=300/10s` sets them apart).

Rows with their own budget that the pipeline never calls (`/runs/stats` 1/10, `DELETE /sessions`
10/60) are left in `other`; rows more generous than the default that it does call (`POST /feedback`,
`POST /runs/batch`, `/info`) are counted in `other` too, which again only errs on the safe side.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from lswh_core.errors import SettingsError
from lswh_core.ids import is_uuid

VARIABLE = "LSWH_LANGSMITH_RATE_LIMITS"

RUN_READ = "run_read"
RUN_QUERY = "run_query"
V2_RUN_READ = "v2_run_read"
V2_RUN_QUERY = "v2_run_query"
RUNS_PATCH = "runs_patch"
EXAMPLES_GET = "examples_get"
OTHER = "other"
ROUTES = (RUN_READ, RUN_QUERY, V2_RUN_READ, V2_RUN_QUERY, RUNS_PATCH, EXAMPLES_GET, OTHER)
# An older name in LSWH_LANGSMITH_RATE_LIMITS also sets the v2 route, unless that is named too.
ALSO_SETS = MappingProxyType({RUN_QUERY: V2_RUN_QUERY, RUN_READ: V2_RUN_READ})

# A budget is a log of one entry per request in its window (workers/langsmith/budget.py), so a limit this
# large would hold up to this many entries per route in Redis (about 100 bytes each).
MAX_REQUESTS = 100_000
MAX_WINDOW_SECONDS = 86_400.0


@dataclass(frozen=True)
class Limit:
    requests: int
    window_seconds: float

    def __str__(self) -> str:
        return f"{self.requests}/{_duration(self.window_seconds)}"


DEFAULT_LIMITS: Mapping[str, Limit] = MappingProxyType({
    # "API rate limits" table: GET /runs/{uuid} or /api/v1/runs/{uuid}, "Run lookup".
    RUN_READ: Limit(30, 60.0),
    # "API rate limits" table: POST /runs/query, "Run query (API)" (one figure, no tiers published).
    RUN_QUERY: Limit(15, 10.0),
    # langchain-ai/docs#5652 (merged 2026-08-24): GET /api/v2/runs/{uuid}, SmithDB-backed retrieve.
    V2_RUN_READ: Limit(300, 10.0),
    # langchain-ai/docs#5652 (merged 2026-08-24): POST /api/v2/runs/query, SmithDB-backed query.
    V2_RUN_QUERY: Limit(300, 10.0),
    # "API rate limits" table: PATCH containing /runs, "Run ingest".
    RUNS_PATCH: Limit(2_000, 10.0),
    # "API rate limits" table: GET containing /examples.
    EXAMPLES_GET: Limit(5_000, 60.0),
    # "API rate limits" table: any request with x-api-key, "Default (API key)".
    OTHER: Limit(1_000, 10.0),
})


def route_of(method: str, path: str) -> str:
    """The budget a request draws from, decided as LangSmith's table does (first row that matches).

    `path` may be a whole URL, carry a base path and `/api`, `/api/v1` or `/api/v2` (self-hosted
    endpoints, the SDK's generated v2 client), a trailing slash, a query string or a fragment.
    """
    method = method.strip().upper()
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0].split("#", 1)[0]
    segments = [s for s in path.split("/") if s]
    v2 = False
    if "api" in segments:
        segments = segments[segments.index("api") + 1:]
        if segments and segments[0] in ("v1", "v2"):
            v2 = segments[0] == "v2"
            segments = segments[1:]
    if method == "POST" and segments == ["runs", "query"]:
        return V2_RUN_QUERY if v2 else RUN_QUERY
    if method == "PATCH" and "/runs" in path:
        return RUNS_PATCH
    if method == "GET" and len(segments) == 2 and segments[0] == "runs" and is_uuid(segments[1]):
        return V2_RUN_READ if v2 else RUN_READ
    if method == "GET" and "/examples" in path:
        return EXAMPLES_GET
    return OTHER


def parse_limits(raw: str) -> dict[str, Limit]:
    """LSWH_LANGSMITH_RATE_LIMITS: comma-separated `route=count/window` or `route=off`.

    Routes not named keep LangSmith Cloud's defaults; empty means all defaults; `off` alone means
    no budget at all (a self-hosted server without limits). The window is a number with an
    optional unit, `ms`, `s` (the default), `m` or `h`; a bare unit means one of it:
    `run_query=60/10s,run_read=120/1m,examples_get=off`, `other=100/s`.
    A route that is `off` is absent from the result. `run_query` / `run_read` also set
    `v2_run_query` / `v2_run_read` unless those are given themselves (ALSO_SETS): what the older
    names meant before the v2 endpoints had limits of their own.
    """
    text = raw.strip()
    if not text:
        return dict(DEFAULT_LIMITS)
    if text.lower() == "off":
        return {}
    limits = dict(DEFAULT_LIMITS)
    seen: set[str] = set()
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        route, sep, value = (s.strip() for s in entry.partition("="))
        if not sep or not route or not value:
            raise _error(entry, "an entry is route=count/window or route=off")
        if route not in ROUTES:
            raise _error(entry, f"unknown route {route!r}")
        if route in seen:
            raise _error(entry, f"{route} is given twice")
        seen.add(route)
        if value.lower() == "off":
            del limits[route]
        else:
            limits[route] = _limit(entry, value)
    for older, v2 in ALSO_SETS.items():
        if older in seen and v2 not in seen:
            if older in limits:
                limits[v2] = limits[older]
            else:
                limits.pop(v2, None)
    return limits


def format_limits(limits: Mapping[str, Limit]) -> str:
    """The LSWH_LANGSMITH_RATE_LIMITS value that parses back to `limits`."""
    if not limits:
        return "off"
    return ",".join(f"{route}={limits[route]}" if route in limits else f"{route}=off" for route in ROUTES)


_LIMIT = re.compile(r"(\d+)\s*/\s*(\d+(?:\.\d*)?|\.\d+)?\s*(ms|s|m|h)?", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _limit(entry: str, value: str) -> Limit:
    match = _LIMIT.fullmatch(value)
    if not match or not (match.group(2) or match.group(3)):
        raise _error(entry, "the limit is count/window, e.g. 15/10s, 30/1m, 100/s")
    requests = int(match.group(1))
    if not 1 <= requests <= MAX_REQUESTS:
        raise _error(entry, f"the count must be between 1 and {MAX_REQUESTS:,}")
    window = float(match.group(2) or 1) * _UNIT_SECONDS[(match.group(3) or "s").lower()]
    if not 0.001 <= window <= MAX_WINDOW_SECONDS:
        raise _error(entry, "the window must be between 1ms and 24h")
    return Limit(requests, window)


def _error(entry: str, why: str) -> SettingsError:
    return SettingsError(f"{VARIABLE}: {why}, in {entry!r} (routes: {', '.join(ROUTES)}; "
                         f"e.g. {VARIABLE}=run_query=60/10s,run_read=off)")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"

