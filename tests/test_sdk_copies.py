"""Our copies of SDK-private functions, run beside the installed SDK's own on one table, so an SDK
release that changes its derivation fails here before our clients and the SDK's disagree
(`QueryBackend.of` has its own table in tests/test_query_backend.py)."""

from __future__ import annotations

import uuid

import pytest
from langsmith.client import _get_openapi_base_url

from workers.langsmith.clients import openapi_base_url

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


SERVER_VERSIONS = ["", "0.15.0", "0.16.0", "0.16.13", "0.16.14", "0.16.14.post1", "0.16.15", "0.17.0", "1.0",
                   "0.16.14rc1", "v0.16.20", "not-a-version", "0.16.x"]


@pytest.mark.parametrize("version", SERVER_VERSIONS)
def test_a_server_older_than_the_queue_items_endpoint_is_judged_as_the_sdk_judges_it(
        version: str, caplog: pytest.LogCaptureFixture) -> None:
    # workers.langsmith.door.queue_items_missing compares /info's version as the SDK's private
    # _internal._backend_version._check_backend_version does (packaging's parse): too old, fine,
    # or unparseable must be the same three answers for the same strings.
    from langsmith._internal._backend_version import _check_backend_version

    from workers.langsmith.door import QUEUE_ITEMS_VERSION, queue_items_missing

    with caplog.at_level("WARNING", logger="langsmith._internal._backend_version"):
        _check_backend_version(version, min_version=QUEUE_ITEMS_VERSION)
    sdk = ("older" if "older than" in caplog.text else "unparseable" if "Could not parse" in caplog.text
           else "fine")
    reason = queue_items_missing(version)
    ours = ("older" if "has no annotation-queue items endpoint" in reason
            else "unparseable" if "reports" in reason else "fine")
    assert ours == sdk or (not version and ours == "unparseable" and sdk == "fine"), (version, reason)
