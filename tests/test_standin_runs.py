"""Run reads on the stand-in, through the real SDK: the v2 runs query and retrieve
(`Client.runs`, the generated async client), v1 `POST /runs/query` through the generic request call,
and the `/info` profiles that decide between them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from langsmith import Client
from langsmith._exceptions import NotFoundError, UnprocessableEntityError
from langsmith._internal._v2_migration_utils import QueryBackend, get_query_backend
from langsmith.utils import LangSmithError

from tests.support.procs import free_port, python_module, wait_http
from tests.support.stack import StandIn, fresh_key


def sdk(standin: StandIn, key: str | None = None) -> Client:
    return Client(api_url=standin.url, api_key=key or fresh_key(), auto_batch_tracing=False)


def on_a_loop(client: Client, call: Any) -> Any:
    """`await call()` on its own event loop, then close the SDK's generated async client. Left to its
    `__del__`, an unclosed one breaks CPython 3.11's recursion bookkeeping (a later `compile` fails
    with "AST constructor recursion depth mismatch")."""

    async def run() -> Any:
        try:
            return await call()
        finally:
            await client.runs._client.close()

    return asyncio.run(run())


def query_v2(standin: StandIn, **params: Any) -> list[Any]:
    """Every run `client.runs.query_v2` yields, following cursors."""
    client = sdk(standin)

    async def collect() -> list[Any]:
        return [run async for run in client.runs.query_v2(**params)]

    return list(on_a_loop(client, collect))


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def add_runs(standin: StandIn, project: str, n: int, **fields: Any) -> list[str]:
    runs = [{"id": str(uuid.uuid4()), "session_id": project, "name": f"run-{i}", "start_time": ago(minutes=i + 1),
             "inputs": {"q": i}, "outputs": {"a": i}, **fields} for i in range(n)]
    standin.add_runs(runs)
    return [r["id"] for r in runs]


def post_v2(standin: StandIn, body: dict[str, Any]) -> httpx.Response:
    return standin.http.post("/api/v2/runs/query", json=body, headers={"x-api-key": fresh_key()})


# --- v2 query -------------------------------------------------------------------------------------


def test_v2_query_returns_the_selected_fields_of_the_asked_runs(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    ids = add_runs(fresh, project, 4)
    add_runs(fresh, str(uuid.uuid4()), 2)  # another project
    runs = query_v2(fresh, project_ids=[project], ids=ids[:3], selects=["INPUTS", "OUTPUTS", "PROJECT_ID", "STATUS"])
    assert sorted(r.id for r in runs) == sorted(ids[:3])
    by_id = {r.id: r for r in runs}
    assert (by_id[ids[0]].inputs, by_id[ids[0]].outputs) == ({"q": 0}, {"a": 0})
    assert by_id[ids[0]].project_id == project
    assert by_id[ids[0]].status == "SUCCESS"


def test_v2_query_without_selects_returns_only_ids(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    add_runs(fresh, project, 2)
    answer = post_v2(fresh, {"project_ids": [project]})
    assert answer.status_code == 200
    assert [set(item) for item in answer.json()["items"]] == [{"id"}, {"id"}]
    selected = post_v2(fresh, {"project_ids": [project], "selects": ["NAME"]}).json()["items"]
    assert [set(item) for item in selected] == [{"id", "name"}, {"id", "name"}]


def test_v2_query_covers_the_last_day_unless_told(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    recent = add_runs(fresh, project, 1)
    old = add_runs(fresh, project, 1, start_time=ago(days=3))
    assert [r.id for r in query_v2(fresh, project_ids=[project])] == recent
    window = query_v2(fresh, project_ids=[project], min_start_time=ago(days=4), max_start_time=ago(days=2))
    assert [r.id for r in window] == old


def test_v2_query_pages_by_cursor(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    ids = add_runs(fresh, project, 5)
    runs = query_v2(fresh, project_ids=[project], page_size=2)
    assert sorted(r.id for r in runs) == sorted(ids)
    assert fresh.stats()["requests"]["POST /api/v2/runs/query"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"project_ids": []},
        {"project_ids": ["not-a-uuid"]},
        {"project_ids": [str(uuid.uuid4())], "reference_dataset_id": str(uuid.uuid4())},
        {"project_ids": [str(uuid.uuid4())], "page_size": 0},
        {"project_ids": [str(uuid.uuid4())], "page_size": 1001},
        {"project_ids": [str(uuid.uuid4())], "selects": ["inputs"]},
        {"project_ids": [str(uuid.uuid4())], "min_start_time": "yesterday"},
        {"project_ids": [str(uuid.uuid4())], "cursor": "bogus"},
        {"project_ids": [str(uuid.uuid4())], "min_feedback_modified_at": ago(hours=1)},
        {"project_ids": [str(uuid.uuid4())], "max_feedback_modified_at": ago(hours=1), "filter": 'eq(name, "x")'},
    ],
)
def test_v2_query_refuses_what_langsmith_refuses_with_422(fresh: StandIn, body: dict[str, Any]) -> None:
    assert post_v2(fresh, body).status_code == 422


def test_v2_query_page_size_limits_reach_the_sdk_as_422(fresh: StandIn) -> None:
    with pytest.raises(UnprocessableEntityError):
        query_v2(fresh, project_ids=[str(uuid.uuid4())], page_size=1001)
    assert len(query_v2(fresh, project_ids=[str(uuid.uuid4())], page_size=1000)) == 0


def test_v2_query_applies_filter_trace_filter_and_tree_filter(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    root, child, other_root = (str(uuid.uuid4()) for _ in range(3))
    fresh.add_runs([
        {"id": root, "session_id": project, "name": "agent", "run_type": "chain", "start_time": ago(minutes=3),
         "status": "success", "tags": ["production"]},
        {"id": child, "session_id": project, "trace_id": root, "parent_run_id": root, "name": "search_tool",
         "run_type": "tool", "start_time": ago(minutes=2)},
        {"id": other_root, "session_id": project, "name": "agent", "run_type": "chain",
         "start_time": ago(minutes=1), "status": "error", "error": "boom"},
    ])
    ids = lambda **f: sorted(r.id for r in query_v2(fresh, project_ids=[project], **f))  # noqa: E731
    assert ids(filter='eq(run_type, "tool")') == [child]
    assert ids(filter='and(eq(name, "agent"), has(tags, "production"))') == [root]
    assert ids(trace_filter='eq(status, "success")') == sorted([root, child])
    assert ids(tree_filter='eq(name, "search_tool")') == sorted([root, child])
    assert ids(filter='eq(error, true)') == [other_root]
    assert ids(is_root=True) == sorted([root, other_root])
    assert post_v2(fresh, {"project_ids": [project], "filter": "eq(name"}).status_code == 400


def test_v2_query_feedback_bounds_apply_to_the_feedback_condition(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    early, late, other_key = add_runs(fresh, project, 3)
    fresh.add_feedback([
        {"run_id": early, "key": "correctness", "score": 1, "modified_at": ago(hours=5)},
        {"run_id": late, "key": "correctness", "score": 0, "modified_at": ago(minutes=5)},
        {"run_id": other_key, "key": "note", "score": 0, "modified_at": ago(minutes=5)},
    ])
    found = query_v2(fresh, project_ids=[project], filter='eq(feedback_key, "correctness")',
                     min_feedback_modified_at=ago(hours=1))
    assert [r.id for r in found] == [late]
    found = query_v2(fresh, project_ids=[project], filter='eq(feedback_key, "correctness")',
                     max_feedback_modified_at=ago(hours=1))
    assert [r.id for r in found] == [early]


def test_feedback_stats_and_metadata_come_back_when_selected(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    [run_id] = add_runs(fresh, project, 1, extra={"metadata": {"customer": "acme"}})
    fresh.add_feedback([{"run_id": run_id, "key": "correctness", "score": 1}])
    [run] = query_v2(fresh, project_ids=[project], selects=["METADATA", "FEEDBACK_STATS"])
    assert run.metadata == {"customer": "acme"}
    assert run.feedback_stats is not None and run.feedback_stats["correctness"].n == 1


# --- v2 retrieve ----------------------------------------------------------------------------------


def retrieve(standin: StandIn, run_id: str, **params: Any) -> Any:
    client = sdk(standin)

    async def one() -> Any:
        return await client.runs.retrieve_v2(run_id, **params)

    return on_a_loop(client, one)


def test_v2_retrieve_answers_the_selected_fields(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    [run_id] = add_runs(fresh, project, 1)
    run = retrieve(fresh, run_id, project_id=project, selects=["INPUTS", "NAME"])
    assert (run.id, run.name, run.inputs, run.outputs) == (run_id, "run-0", {"q": 0}, None)
    bare = fresh.http.get(f"/api/v2/runs/{run_id}", params={"project_id": project},
                          headers={"x-api-key": fresh_key()})
    assert bare.json() == {"id": run_id}


def test_v2_retrieve_needs_the_owning_project(fresh: StandIn) -> None:
    [run_id] = add_runs(fresh, str(uuid.uuid4()), 1)
    with pytest.raises(NotFoundError):
        retrieve(fresh, run_id, project_id=str(uuid.uuid4()))
    answer = fresh.http.get(f"/api/v2/runs/{run_id}", headers={"x-api-key": fresh_key()})
    assert answer.status_code == 422


# --- v1 query -------------------------------------------------------------------------------------


def test_v1_query_by_ids_pages_100_at_most(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    ids = add_runs(fresh, project, 5)
    client = sdk(fresh)
    body = {"session": [project], "id": ids, "select": ["inputs", "outputs"], "limit": 2}
    seen: list[dict[str, Any]] = []
    while True:
        page = client.request_with_retries("POST", "/runs/query", json=body).json()
        seen += page["runs"]
        if not page["cursors"]["next"]:
            break
        body["cursor"] = page["cursors"]["next"]
    assert sorted(r["id"] for r in seen) == sorted(ids)
    assert all(set(r) == {"id", "inputs", "outputs"} for r in seen)
    with pytest.raises(LangSmithError, match="422"):
        client.request_with_retries("POST", "/runs/query", json={"id": ids, "limit": 101})


def test_runs_carry_modified_at_and_admin_upsert_moves_it(fresh: StandIn) -> None:
    [run_id] = add_runs(fresh, str(uuid.uuid4()), 1)
    first = next(r for r in fresh.runs() if r["id"] == run_id)["modified_at"]
    fresh.add_runs([{"id": run_id, "outputs": {"a": "fixed"}}])
    again = next(r for r in fresh.runs() if r["id"] == run_id)
    assert again["modified_at"] > first and again["outputs"] == {"a": "fixed"} and again["inputs"] == {"q": 0}


# --- /info profiles -------------------------------------------------------------------------------


def resources_warn(standin: StandIn, caplog: pytest.LogCaptureFixture) -> bool:
    """Whether the SDK's version-gated resources (`runs`, `annotation_queues`, `sessions`) warn."""
    client = sdk(standin)
    with caplog.at_level(logging.WARNING, logger="langsmith"):
        client.runs  # noqa: B018 - the properties check the server version
        client.annotation_queues  # noqa: B018
        client.sessions  # noqa: B018

    async def nothing() -> None:
        return None

    on_a_loop(client, nothing)
    return "older than the minimum" in caplog.text


def test_cloud_profile_serves_both_read_paths_and_the_sdk_resources_without_warning(
    fresh: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    client = sdk(fresh)
    info = client.info
    assert info.instance_flags is not None and info.instance_flags["dataset_examples_multipart_enabled"]
    assert get_query_backend(info.instance_flags) == QueryBackend.DUAL
    assert not resources_warn(fresh, caplog)
    project = str(uuid.uuid4())
    [run_id] = add_runs(fresh, project, 1)
    assert client.request_with_retries("GET", f"/runs/{run_id}").json()["id"] == run_id
    assert [r.id for r in query_v2(fresh, project_ids=[project])] == [run_id]


def test_v1_only_profile_has_no_v2_routes_and_the_sdk_picks_v1(fresh: StandIn) -> None:
    fresh.use_flags("v1-only")
    info = sdk(fresh).info
    assert get_query_backend(info.instance_flags) == QueryBackend.CLICKHOUSE_ONLY
    assert info.version < "0.16.0"
    project = str(uuid.uuid4())
    [run_id] = add_runs(fresh, project, 1)
    assert post_v2(fresh, {"project_ids": [project]}).status_code == 404
    assert fresh.http.get("/api/v2/runs/rules", headers={"x-api-key": fresh_key()}).status_code == 404
    assert sdk(fresh).request_with_retries("GET", f"/runs/{run_id}").json()["id"] == run_id


def test_v2_only_profile_refuses_v1_run_reads(fresh: StandIn) -> None:
    fresh.use_flags("v2-only")
    assert get_query_backend(sdk(fresh).info.instance_flags) == QueryBackend.SMITHDB_ONLY
    project = str(uuid.uuid4())
    [run_id] = add_runs(fresh, project, 1)
    headers = {"x-api-key": fresh_key()}
    assert fresh.http.get(f"/runs/{run_id}", headers=headers).status_code == 404
    assert fresh.http.post("/runs/query", json={"id": [run_id]}, headers=headers).status_code == 404
    assert [r.id for r in query_v2(fresh, project_ids=[project])] == [run_id]


@pytest.mark.parametrize("switch", ["flag", "env"])
def test_flags_profile_chosen_at_start(switch: str) -> None:
    port = free_port()
    args = ["--port", str(port)] + (["--flags", "v1-only"] if switch == "flag" else [])
    env = {"STANDIN_FLAGS": "v1-only" if switch == "env" else ""}
    proc = python_module("lswh_standin", *args, env=env, name="standin-v1")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/info", proc)
        flags = httpx.get(f"{url}/info").json()["instance_flags"]
        assert get_query_backend(flags) == QueryBackend.CLICKHOUSE_ONLY
    finally:
        proc.stop()


def test_unknown_flags_profile_stops_the_standin_with_a_clear_error() -> None:
    proc = python_module("lswh_standin", "--port", str(free_port()), env={"STANDIN_FLAGS": "v3"}, name="standin-v3")
    assert proc.popen.wait(30) == 2
    assert "STANDIN_FLAGS='v3'" in proc.output()
    proc.stop()


def test_feedback_bounds_leave_non_feedback_branches_alone(fresh: StandIn) -> None:
    project = str(uuid.uuid4())
    named, scored = add_runs(fresh, project, 2)
    fresh.add_feedback([{"run_id": scored, "key": "correctness", "score": 1, "modified_at": ago(minutes=5)}])
    found = query_v2(fresh, project_ids=[project], filter='or(eq(name, "run-0"), eq(feedback_key, "correctness"))',
                     min_feedback_modified_at=ago(hours=1))
    assert sorted(r.id for r in found) == sorted([named, scored])
