"""Our copies of SDK-private functions, run beside the installed SDK's own on one table, so an SDK
release that changes its derivation fails here before our clients and the SDK's disagree
(`QueryBackend.of` has its own table in tests/test_query_backend.py)."""

from __future__ import annotations

import uuid

import pytest
from langsmith.client import _get_openapi_base_url

from workers.langsmith_clients import openapi_base_url

API_URLS = [
    "https://api.smith.langchain.com",
    "https://api.smith.langchain.com/",
    "https://eu.api.smith.langchain.com",
    # Self-hosted: the SDK's endpoint ends in /api/v1 (or /api); the generated client's paths
    # carry their own /api/v1 prefix, so the base drops it.
    "https://langsmith.example.com/api/v1",
    "https://langsmith.example.com/api/v1/",
    "https://langsmith.example.com/api",
    "https://langsmith.example.com/api/",
    "https://langsmith.example.com/prefix/api/v1",
    "http://127.0.0.1:1984",
    "http://localhost:8080/api/v1",
    # Near misses that must stay as they are.
    "https://langsmith.example.com/api/v2",
    "https://langsmith.example.com/apiv1",
    "https://langsmith.example.com/v1",
    "https://langsmith.example.com/api/v1/api",
    "https://langsmith.example.com//",
    "",
]


@pytest.mark.parametrize("api_url", API_URLS)
def test_openapi_base_url_is_the_sdks(api_url: str) -> None:
    assert openapi_base_url(api_url) == _get_openapi_base_url(api_url)


WORKSPACE = "5f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"
WORKSPACE_IDS = [
    "", " ", WORKSPACE, f"  {WORKSPACE}  ", f'"{WORKSPACE}"', f"'{WORKSPACE}'", f' "{WORKSPACE}" ',
    f"\t{WORKSPACE}\n", '""', "''", WORKSPACE.upper(),
]


@pytest.mark.parametrize("raw", WORKSPACE_IDS)
def test_workspace_id_is_read_as_the_sdk_reads_it(raw: str) -> None:
    # Settings strips LANGSMITH_WORKSPACE_ID as the SDK's public utils.get_workspace_id does, then
    # insists on a UUID; "" (from '""') is no workspace to the SDK too (it sends none when falsy).
    from langsmith.utils import get_workspace_id

    from lswh_core.settings import _workspace_id

    sdk = get_workspace_id(raw)
    ours = _workspace_id({"LANGSMITH_WORKSPACE_ID": raw})
    assert ours == (str(uuid.UUID(sdk)) if sdk else None)
