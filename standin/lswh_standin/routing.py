"""How a request reaches a handler: counted, slowed, faulted, authenticated, rate-limited, in that order."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lswh_standin.limits import category
from lswh_standin.state import API_KEY_PREFIX, ApiError, State, detail, state_of
from lswh_standin.tenants import tenants_of

Handler = Callable[[Request, State], Awaitable[Response]]


def _stats_key(method: str, template: str) -> str:
    path = re.sub(r":\w+}", "}", template)
    return f"{method} {path}"


def _aliases(template: str) -> list[str]:
    """The path and its self-hosted spelling: the SDK joins paths to `LANGSMITH_ENDPOINT`, which on a
    self-hosted server ends in `/api/v1` (`_dataset_examples_path`, `_platform_path` in client.py drop
    their own `/v1` then)."""
    if template.startswith("/api/"):
        return [template]
    if template.startswith("/v1/"):
        return [template, f"/api{template}"]
    return [template, f"/api/v1{template}"]


def api(template: str, handler: Handler, methods: list[str], *, auth: bool = True,
        limited: bool = True, langsmith: bool = True) -> list[Route]:
    """An API (or S3, `langsmith=False`) route under each of its spellings, all counted under one
    stats key. LangSmith routes check the tenant header (standin/lswh_standin/tenants.py)."""

    async def endpoint(request: Request) -> Response:
        state = state_of(request)
        key = _stats_key(request.method, template)
        state.stats[key] += 1
        if state.latency_ms > 0:
            await asyncio.sleep(state.latency_ms / 1000)
        fault = state.take_fault(request.method, request.url.path)
        if fault is not None:
            if fault.stall_seconds > 0:
                await asyncio.sleep(fault.stall_seconds)
            if fault.status is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                return detail(fault.status, f"injected fault ({fault.status})", headers)
        api_key = request.headers.get("x-api-key") or ""
        if auth and not api_key.startswith(API_KEY_PREFIX):
            return detail(401, "Invalid token")
        if langsmith:
            refused = tenants_of(request).check(request, key, workspace_scoped=auth)
            if refused is not None:
                return refused
        if limited and state.limits_enabled:
            name = category(request.method, request.url.path)
            # /info is limited by IP in the docs' table; everything else by the key.
            identity = f"ip:{request.client.host if request.client else '-'}" if name == "info" else api_key
            if not state.windows.admit(identity, name, state.limits[name]):
                state.rate_limited[key] += 1
                return detail(429, "Too many requests")  # no Retry-After, as LangSmith sends none
        try:
            return await handler(request, state)
        except ApiError as e:
            return detail(e.status, e.detail)

    return [Route(path, endpoint, methods=methods) for path in _aliases(template)]


def admin(template: str, handler: Handler, methods: list[str]) -> Route:
    """An admin route: no key, no limits, not counted."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, state_of(request))
        except ApiError as e:
            return detail(e.status, e.detail)

    return Route(template, endpoint, methods=methods)
