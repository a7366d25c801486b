"""The one way LangSmith clients are built: both SDK clients from one `ClientConfig`.

The SDK ships two clients with two HTTP stacks: the hand-written `Client` (requests) and the
generated v2 client (`AsyncLangsmith`, httpx2). Built apart, they drifted: the v2 client read
only `LANGSMITH_TENANT_ID` (so an organization-scoped key got 403 on every v2 call) and ignored
proxies and CA bundles (`trust_env=False`). Here they are made from the same values, read once:

- endpoint and API key: `LANGSMITH_ENDPOINT`, `LANGSMITH_API_KEY` (the SDK's own variables);
- workspace: `LANGSMITH_WORKSPACE_ID` (Settings checks it is a UUID), sent as `X-Tenant-Id` on
  every request of both clients. LangSmith's docs (Administration overview, "Service keys";
  "Manage your organization using the API"): an organization-scoped service key must send
  `X-Tenant-Id` for workspace-scoped resources, else 403 Forbidden;
- egress: one `lswh_core.egress.Route` for the endpoint (proxy and CA bundle, as `requests`
  decides them), given to the requests session and to the httpx2 transport alike.

workers/langsmith/door.py builds its clients only through here.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import requests
from langsmith import AsyncLangsmith, Client
from langsmith import schemas as ls_schemas
from langsmith import utils as ls_utils

from lswh_core.egress import Route, ssl_context
from lswh_core.settings import Settings
from workers.errors import TRANSIENT_STATUSES, LangSmithUnavailable, parse_retry_after
from workers.langsmith.transport import Budget, BudgetedAdapter, BudgetedTransport, Recorder, RouteOf

TIMEOUT_MS = (5_000, 30_000)
V2_CONNECTIONS = 32


def openapi_base_url(api_url: str) -> str:
    """The generated client's base URL from LANGSMITH_ENDPOINT, as the SDK derives it
    (client.py `_get_openapi_base_url`): self-hosted endpoints end in /api/v1."""
    api_url = api_url.rstrip("/")
    for suffix in ("/api/v1", "/api"):
        if api_url.endswith(suffix):
            return api_url[: -len(suffix)]
    return api_url


@dataclass(frozen=True)
class ClientConfig:
    """Everything a LangSmith client is built from. Never logged whole: it holds the key."""

    api_url: str
    api_key: str | None
    workspace_id: str | None
    egress: Route

    @classmethod
    def of(cls, settings: Settings, env: Mapping[str, str] | None = None, *, api_key: str | None = None
           ) -> ClientConfig:
        env = os.environ if env is None else env
        # The SDK's own reading of the endpoint (its default when unset).
        api_url = ls_utils.get_api_url(env.get("LANGSMITH_ENDPOINT") or None)
        key = api_key if api_key is not None else (env.get("LANGSMITH_API_KEY") or None)
        return cls(api_url=api_url, api_key=key, workspace_id=settings.langsmith_workspace_id,
                   egress=Route.to(api_url))

    def describe(self) -> str:
        """What may be logged at start: no key, no proxy credentials."""
        workspace = self.workspace_id or "none (the key's own)"
        return f"LangSmith {self.api_url}, workspace {workspace}, {self.egress.describe()}"


def _session(config: ClientConfig) -> requests.Session:
    """A requests session that follows the config's egress, not its own reading of the
    environment: the proxy and CA bundle were decided once, for both clients."""
    session = requests.Session()
    session.trust_env = False
    if config.egress.proxy:
        session.proxies = {"http": config.egress.proxy, "https": config.egress.proxy}
    if config.egress.ca_bundle:
        session.verify = config.egress.ca_bundle
    return session


def _raise_transient(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """The final transient answer leaves the SDK as LangSmithUnavailable, before the SDK's own
    retry loop could sleep on it (it sleeps a Retry-After, or 30 s without one, on a 429)."""
    if response.status_code in TRANSIENT_STATUSES:
        raise LangSmithUnavailable(response.status_code, parse_retry_after(response.headers.get("Retry-After")))


def build_client(config: ClientConfig, adapter: BudgetedAdapter, *,
                 info: ls_schemas.LangSmithInfo | Mapping[str, Any] | None = None) -> Client:
    """The SDK's hand-written client, sending through `adapter` (the shared budget). `info`, when
    given, is the server's known `/info` (the client then never reads it itself)."""
    session = _session(config)
    session.hooks["response"].append(_raise_transient)
    client = Client(
        api_url=config.api_url,
        api_key=config.api_key,
        # "" rather than None: the SDK would fall back to LANGCHAIN_WORKSPACE_ID or a profile.
        workspace_id=config.workspace_id or "",
        timeout_ms=TIMEOUT_MS,
        session=session,
        auto_batch_tracing=False,
        info=dict(info) if isinstance(info, Mapping) else info,
    )
    # After the Client: it mounts its own retrying adapter on the session.
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return client


def build_v2(config: ClientConfig, budget: Budget | None, route_of: RouteOf, recorder: Recorder | None
             ) -> AsyncLangsmith:
    """The generated v2 client, on the budgeted transport. httpx(2) drops environment proxies
    whenever a transport is passed, so the transport gets the proxy and CA bundle itself."""
    timeout = httpx2.Timeout(TIMEOUT_MS[1] / 1000, connect=TIMEOUT_MS[0] / 1000)
    context = ssl_context(config.egress.ca_bundle)
    verify: ssl.SSLContext | bool = context if context is not None else True
    # trust_env=False: the CA bundle is the config's (the policy already read the environment).
    inner = httpx2.AsyncHTTPTransport(retries=2, limits=httpx2.Limits(max_connections=V2_CONNECTIONS),
                                      proxy=config.egress.proxy, verify=verify, trust_env=False)
    http = httpx2.AsyncClient(transport=BudgetedTransport(budget, route_of, recorder, inner=inner),
                              timeout=timeout, trust_env=False, follow_redirects=False)
    # The SDK annotates with httpx but runs on httpx2 (langsmith/_httpx.py): same API.
    client = AsyncLangsmith(api_key=config.api_key, tenant_id=config.workspace_id,
                            base_url=openapi_base_url(config.api_url), max_retries=0,
                            timeout=timeout, http_client=http)  # type: ignore[arg-type]
    # None means "read LANGSMITH_TENANT_ID" to the generated client: the config is the only source.
    client.tenant_id = config.workspace_id
    return client
