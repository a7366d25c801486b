"""The stand-in's organization-scoped keys (standin/lswh_standin/tenants.py), through the real SDK: its 403
is the one the SDK recognises, and X-Tenant-Id is counted per route."""

from __future__ import annotations

import uuid

import httpx
import pytest
from langsmith import Client
from langsmith import utils as ls_utils

from tests.support.stack import StandIn

WORKSPACE = str(uuid.uuid4())


def org_key() -> str:
    return f"lsv2-standin-org-{uuid.uuid4()}"


def test_an_org_scoped_key_without_a_workspace_gets_the_403_the_sdk_explains(standin: StandIn) -> None:
    client = Client(api_url=standin.url, api_key=org_key(), workspace_id="", auto_batch_tracing=False)
    with pytest.raises(ls_utils.LangSmithUserError, match="LANGSMITH_WORKSPACE_ID"):
        list(client.list_datasets(limit=1))
    answer = httpx.get(f"{standin.url}/datasets", headers={"x-api-key": org_key()})
    assert answer.status_code == 403
    assert answer.json()["error"] == "org_scoped_key_requires_workspace"


def test_an_org_scoped_key_with_a_workspace_works_and_is_counted(standin: StandIn) -> None:
    before = standin.admin("GET", "tenants")
    client = Client(api_url=standin.url, api_key=org_key(), workspace_id=WORKSPACE, auto_batch_tracing=False)
    list(client.list_datasets(limit=1))
    after = standin.admin("GET", "tenants")
    assert after["with_tenant"]["GET /datasets"] > before["with_tenant"].get("GET /datasets", 0)
    # Every request the client sent carried the workspace (it may read more than one route or page).
    sent = sum(after["with_tenant"].values()) - sum(before["with_tenant"].values())
    assert after["tenant_ids"][WORKSPACE] == sent


def test_a_workspace_scoped_key_needs_no_header_and_info_needs_no_key(standin: StandIn) -> None:
    before = standin.admin("GET", "tenants")["without_tenant"].get("GET /datasets", 0)
    assert httpx.get(f"{standin.url}/datasets", headers={"x-api-key": "lsv2-standin-key"}).status_code == 200
    assert httpx.get(f"{standin.url}/info").status_code == 200
    assert standin.admin("GET", "tenants")["without_tenant"]["GET /datasets"] == before + 1


def test_require_header_refuses_langsmith_requests_without_it_but_not_presigned_objects() -> None:
    server = StandIn(require_header="X-Came-Via:proxy-1")
    try:
        url = server.put_object({"q": 1})
        key = {"x-api-key": "lsv2-standin-key"}
        assert httpx.get(f"{server.url}/datasets", headers=key).status_code == 421
        assert httpx.get(f"{server.url}/datasets", headers={**key, "X-Came-Via": "proxy-1"}).status_code == 200
        assert httpx.get(url).status_code == 200
    finally:
        server.stop()


def test_reset_zeroes_the_tenant_counters(fresh: StandIn) -> None:
    httpx.get(f"{fresh.url}/datasets", headers={"x-api-key": "lsv2-standin-key"})
    assert fresh.admin("GET", "tenants")["without_tenant_total"] >= 1
    fresh.admin("POST", "reset")
    assert fresh.admin("GET", "tenants")["without_tenant_total"] == 0
