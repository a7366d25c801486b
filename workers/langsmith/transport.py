"""Every LangSmith request, through either SDK client, passes here: budget, retries, figures.

The SDK has two clients with two HTTP stacks: the hand-written `Client` (requests/urllib3) and
the generated v2 client (httpx2, the fork the SDK requires). Both get the same policy, applied where each stack sends:

- before each attempt, a slot from the route's shared budget (workers/langsmith/budget.py), so every
  worker of one API key stays under LangSmith's per-key limits together;
- a 429 (LangSmith sends no Retry-After) pauses that route for every worker until its window
  ends, then the request is sent again: waiting for budget never fails a run;
- 408/425/5xx are sent again at most `STATUS_RETRIES` times after a short backoff;
- a Retry-After longer than `MAX_SLEPT_RETRY_AFTER` is never slept here: the answer goes back to
  the caller, which reschedules the job (docs/guarantees.md: What each failure does).

The SDKs' own retries are off (urllib3 retries only connection setup; the generated client has
max_retries=0), so no layer below sleeps out a long Retry-After or resends outside the budget.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx2
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from workers.errors import TRANSIENT_STATUSES, parse_retry_after

log = logging.getLogger("lswh.langsmith")

MAX_SLEPT_RETRY_AFTER = 10.0
STATUS_RETRIES = 2
# A 429 storm longer than this many pauses in a row is handed to the job's own retry (it is
# still transient); each pause lasts a whole window, so this is minutes of waiting.
MAX_RATE_LIMITED = 8


class Budget(Protocol):
    def acquire(self, route: str) -> float: ...

    async def acquire_async(self, route: str) -> float: ...

    def rate_limited(self, route: str) -> None: ...


class Recorder(Protocol):
    """Where request figures go: the module workers/bookkeeping/metrics.py in a worker (its functions are
    these); routes are templates, never URLs."""

    def observe_request(self, service: str, route: str, status: str, seconds: float) -> None: ...

    def count_rate_limited(self, route: str) -> None: ...

    def observe_budget_wait(self, route: str, seconds: float) -> None: ...


RouteOf = Callable[[str, str], str]

_ID_SEGMENT = re.compile(r"^(?:[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}|\d+)$")


def route_label(method: str, path: str) -> str:
    """A request's route for metrics: method and path with ids as {id}. The SDK's paths name
    datasets and runs by id (names travel in query strings), so the labels stay few."""
    segments = ["{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/")]
    return f"{method} {'/'.join(segments) or '/'}"


def _backoff(attempt: int) -> float:
    return min(4.0, 0.5 * 2.0**attempt) * random.uniform(0.75, 1.25)


def _decide(status: int, retry_after: float | None, rate_limited: int, attempts: int) -> str:
    """What to do with an answer: "return" it, "pause" (429: wait for the window) or "retry"."""
    if retry_after is not None and retry_after > MAX_SLEPT_RETRY_AFTER:
        return "return"
    if status == 429 and retry_after is not None:  # LangSmith sends none; a proxy that does is believed
        return "retry" if attempts < STATUS_RETRIES else "return"
    if status == 429:
        return "pause" if rate_limited < MAX_RATE_LIMITED else "return"
    if status in TRANSIENT_STATUSES and attempts < STATUS_RETRIES:
        return "retry"
    return "return"


class Attempts:
    """One request's way through the policy: budget before each attempt, figures after it, and
    what the answer means (send again now, after a delay, or return it)."""

    def __init__(self, budget: Budget | None, route_of: RouteOf, recorder: Recorder | None, method: str,
                 path: str) -> None:
        self.budget = budget
        self.recorder = recorder
        self.route = route_of(method, path)
        self.label = route_label(method, path)
        self.rate_limited = self.retried = 0
        self.started = 0.0

    def waited(self, seconds: float) -> None:
        """Budget was taken (after `seconds` of waiting); the attempt starts now. A grant without
        waiting is recorded too (0 s), so the histogram's count is every budgeted attempt, per
        route, and the share that waited can be read from its buckets."""
        if self.recorder is not None and self.budget is not None:
            self.recorder.observe_budget_wait(self.route, seconds)
        self.started = time.perf_counter()

    def failed(self) -> None:
        if self.recorder is not None:
            self.recorder.observe_request("langsmith", self.label, "error", time.perf_counter() - self.started)

    def answered(self, status: int, retry_after_header: str | None) -> float | None:
        """None: return the answer; else send again after that many seconds."""
        if self.recorder is not None:
            self.recorder.observe_request("langsmith", self.label, str(status), time.perf_counter() - self.started)
        retry_after = parse_retry_after(retry_after_header)
        action = _decide(status, retry_after, self.rate_limited, self.retried)
        if action == "return":
            return None
        if action == "retry":
            self.retried += 1
            return retry_after if retry_after is not None else _backoff(self.retried)
        self.rate_limited += 1
        if self.recorder is not None:
            self.recorder.count_rate_limited(self.route)
        if self.budget is None:
            return _backoff(2)
        self.budget.rate_limited(self.route)  # the next acquire waits out the pause
        return 0.0


class BudgetedAdapter(HTTPAdapter):
    """The hand-written client's transport: requests' adapter with the policy above."""

    def __init__(self, budget: Budget | None, route_of: RouteOf, recorder: Recorder | None) -> None:
        # urllib3 retries only failures to connect: nothing was sent, so nothing is counted twice.
        super().__init__(max_retries=Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.5,
                                           raise_on_status=False, raise_on_redirect=False),
                         pool_maxsize=32)
        self.budget = budget
        self.route_of = route_of
        self.recorder = recorder

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        attempts = Attempts(self.budget, self.route_of, self.recorder, request.method or "GET",
                            urlsplit(request.url or "").path)
        while True:
            attempts.waited(self.budget.acquire(attempts.route) if self.budget is not None else 0.0)
            try:
                response = super().send(request, *args, **kwargs)
            except requests.RequestException:
                attempts.failed()
                raise
            delay = attempts.answered(response.status_code, response.headers.get("Retry-After"))
            if delay is None or not _rewind(request):
                return response
            response.close()
            time.sleep(delay)


def _rewind(request: requests.PreparedRequest) -> bool:
    """Whether the body can be sent again (the SDK's multipart bodies rewind with seek(0))."""
    body = request.body
    if body is None or isinstance(body, bytes | str):
        return True
    seek = getattr(body, "seek", None)
    if seek is None:
        return False
    seek(0)
    return True


class BudgetedTransport(httpx2.AsyncBaseTransport):
    """The generated (v2) client's transport: httpx's, with the same policy, on the I/O loop."""

    def __init__(self, budget: Budget | None, route_of: RouteOf, recorder: Recorder | None,
                 inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx2.AsyncHTTPTransport(retries=2, limits=httpx2.Limits(max_connections=32))
        self.budget = budget
        self.route_of = route_of
        self.recorder = recorder

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        attempts = Attempts(self.budget, self.route_of, self.recorder, request.method, request.url.path)
        while True:
            attempts.waited(await self.budget.acquire_async(attempts.route) if self.budget is not None else 0.0)
            try:
                response = await self.inner.handle_async_request(request)
            except httpx2.TransportError:
                attempts.failed()
                raise
            delay = attempts.answered(response.status_code, response.headers.get("Retry-After"))
            if delay is None:
                return response
            await response.aclose()
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self.inner.aclose()
