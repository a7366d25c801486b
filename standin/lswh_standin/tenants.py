"""Organization-scoped API keys and the `X-Tenant-Id` header, and a header a proxy must add.

What LangSmith does, and where it says so:

- Service keys are organization-scoped or workspace-scoped (docs, "Create an account and API
  key": "For service keys, choose between an organization-scoped and workspace-scoped key").
- `X-Tenant-Id` names the workspace a request targets; without it a request runs against the
  key's own workspace, except with an organization-scoped service key: "If `X-Tenant-Id` is not
  specified when accessing workspace-scoped resources with an organization-scoped service key,
  the request will fail with `403 Forbidden`" (docs, "Manage your organization using the API";
  the same rule in "Administration overview", Service keys, langchain-ai/docs#694).
- The 403's body: the SDK reads `{"error": "org_scoped_key_requires_workspace"}` from it and
  tells the user to set `LANGSMITH_WORKSPACE_ID` (langsmith/client.py `request_with_retries`,
  the `status_code == 403` branch), so the stand-in answers with that code.

The stand-in's form of an organization-scoped key: any key starting with `lsv2-standin-org`
(every other `lsv2-standin` key is workspace-scoped). Every resource route (datasets, examples,
runs, feedback, rules, annotation queues, projects) is workspace-scoped; `/info` is not
(it needs no key at all).

`/_admin/tenants` counts, per workspace-scoped route, the requests that carried `X-Tenant-Id`
and those that did not, so a test can assert that none went without.

`--require-header NAME:VALUE` (tests behind a proxy): every LangSmith route answers 421
Misdirected Request to a request without that header, so a request that went around the proxy
(which adds it) fails instead of landing. Not LangSmith behaviour: a test switch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.state import State

ORG_KEY_PREFIX = "lsv2-standin-org"
TENANT_HEADER = "x-tenant-id"
ORG_SCOPED_ERROR = "org_scoped_key_requires_workspace"
ORG_SCOPED_DETAIL = ("X-Tenant-Id header is required when accessing workspace-scoped resources "
                     "with an organization-scoped API key")


@dataclass
class Tenants:
    with_header: Counter[str] = field(default_factory=Counter)
    without_header: Counter[str] = field(default_factory=Counter)
    tenant_ids: Counter[str] = field(default_factory=Counter)
    # (name, value) a request must carry, or None.
    required: tuple[str, str] | None = None
    misdirected: Counter[str] = field(default_factory=Counter)

    def check(self, request: Request, route: str, *, workspace_scoped: bool) -> Response | None:
        """None to go on, or the answer that refuses the request."""
        if self.required is not None:
            name, value = self.required
            if request.headers.get(name) != value:
                self.misdirected[route] += 1
                return JSONResponse({"detail": f"request did not come through the proxy (no {name} header)"},
                                    status_code=421)
        if not workspace_scoped:
            return None
        tenant = request.headers.get(TENANT_HEADER)
        (self.with_header if tenant else self.without_header)[route] += 1
        if tenant:
            self.tenant_ids[tenant] += 1
        key = request.headers.get("x-api-key") or ""
        if not tenant and key.startswith(ORG_KEY_PREFIX):
            return JSONResponse({"error": ORG_SCOPED_ERROR, "detail": ORG_SCOPED_DETAIL}, status_code=403)
        return None

    def reset(self) -> None:
        """Counters back to zero (`POST /_admin/reset`); the required header stays, as started."""
        for counter in (self.with_header, self.without_header, self.tenant_ids, self.misdirected):
            counter.clear()

    def figures(self) -> dict[str, object]:
        return {
            "with_tenant": dict(self.with_header),
            "without_tenant": dict(self.without_header),
            "without_tenant_total": sum(self.without_header.values()),
            "tenant_ids": dict(self.tenant_ids),
            "misdirected": dict(self.misdirected),
            "misdirected_total": sum(self.misdirected.values()),
        }


def parse_required(text: str | None) -> tuple[str, str] | None:
    """`NAME:VALUE` from `--require-header`; None when unset."""
    if not text:
        return None
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not value.strip():
        raise ValueError(f"--require-header takes NAME:VALUE, got {text!r}")
    return name.strip().lower(), value.strip()


def tenants_of(request: Request) -> Tenants:
    tenants: Tenants = request.app.state.tenants
    return tenants


async def read(request: Request, state: State) -> Response:
    return JSONResponse(tenants_of(request).figures())
