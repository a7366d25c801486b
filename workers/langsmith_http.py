"""Every LangSmith request, through either SDK client, passes here: budget, retries, figures.

The SDK has two clients with two HTTP stacks: the hand-written `Client` (requests/urllib3) and
the generated v2 client (httpx2, the fork the SDK requires). Both get the same policy, applied where each stack sends:

- before each attempt, a slot from the route's shared budget (workers/budget.py), so every
  worker of one API key stays under LangSmith's per-key limits together;
- a 429 (LangSmith sends no Retry-After) pauses that route for every worker until its window
  ends, then the request is sent again: waiting for budget never fails a run;
- 408/425/5xx are sent again at most `STATUS_RETRIES` times after a short backoff;
- a Retry-After longer than `MAX_SLEPT_RETRY_AFTER` is never slept here: the answer goes back to
  the caller, which reschedules the job (SPEC: failure semantics).

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
    """Where request figures go (workers/metrics.py); routes are templates, never URLs."""

    def request(self, service: str, route: str, status: str, seconds: float) -> None: ...

    def rate_limited(self, route: str) -> None: ...

    def budget_wait(self, route: str, seconds: float) -> None: ...


RouteOf = Callable[[str, str], str]

_ID_SEGMENT = re.compile(r"^(?:[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}|\d+)$")


def route_label(method: str, path: str) -> str:
    """A request's route for metrics: method and path with ids as {id}. The SDK's paths name
    datasets and runs by id (names travel in query strings), so the labels stay few."""
    segments = ["{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/")]
    return f"{method} {'/'.join(segments) or '/'}"


def _backoff(attempt: int) -> float:
    return min(4.0, 0.5 * 2**attempt) * random.uniform(0.75, 1.25)


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
        path = urlsplit(request.url or "").path
        route = self.route_of(request.method or "GET", path)
        label = route_label(request.method or "GET", path)
        rate_limited = attempts = 0
        while True:
            if self.budget is not None:
                waited = self.budget.acquire(route)
                if self.recorder is not None and waited:
                    self.recorder.budget_wait(route, waited)
            started = time.perf_counter()
            try:
                response = super().send(request, *args, **kwargs)
            except requests.RequestException:
                if self.recorder is not None:
                    self.recorder.request("langsmith", label, "error", time.perf_counter() - started)
                raise
            if self.recorder is not None:
                self.recorder.request("langsmith", label, str(response.status_code), time.perf_counter() - started)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            action = _decide(response.status_code, retry_after, rate_limited, attempts)
            if action == "return" or not _rewind(request):
                return response
            response.close()
            if action == "pause":
                rate_limited += 1
                self._paused(route)
            else:
                attempts += 1
                time.sleep(retry_after if retry_after is not None else _backoff(attempts))

    def _paused(self, route: str) -> None:
        if self.recorder is not None:
            self.recorder.rate_limited(route)
        if self.budget is not None:
            self.budget.rate_limited(route)
        else:
            time.sleep(_backoff(2))


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
        route = self.route_of(request.method, request.url.path)
        label = route_label(request.method, request.url.path)
        rate_limited = attempts = 0
        while True:
            if self.budget is not None:
                waited = await self.budget.acquire_async(route)
                if self.recorder is not None and waited:
                    self.recorder.budget_wait(route, waited)
            started = time.perf_counter()
            try:
                response = await self.inner.handle_async_request(request)
            except httpx2.TransportError:
                if self.recorder is not None:
                    self.recorder.request("langsmith", label, "error", time.perf_counter() - started)
                raise
            if self.recorder is not None:
                self.recorder.request("langsmith", label, str(response.status_code), time.perf_counter() - started)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            action = _decide(response.status_code, retry_after, rate_limited, attempts)
            if action == "return":
                return response
            await response.aclose()
            if action == "pause":
                rate_limited += 1
                if self.recorder is not None:
                    self.recorder.rate_limited(route)
                if self.budget is not None:
                    self.budget.rate_limited(route)
                else:
                    await asyncio.sleep(_backoff(2))
            else:
                attempts += 1
                await asyncio.sleep(retry_after if retry_after is not None else _backoff(attempts))

    async def aclose(self) -> None:
        await self.inner.aclose()
