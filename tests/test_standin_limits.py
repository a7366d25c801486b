"""The stand-in's rate limits: LangSmith Cloud's per-key table, a strict sliding window, 429 without
Retry-After, and the switches that lift them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from langsmith import Client
from langsmith.utils import LangSmithRateLimitError, LangSmithRetry

from lswh_standin.limits import CLOUD_LIMITS, Limit, SlidingWindows, category
from tests.support.procs import free_port, python_module, wait_http
from tests.support.stack import StandIn, fresh_key
from tests.test_dev import start_dev  # noqa: F401 - the fixture that runs `lswh dev` as a user does

FIXTURE_RUN_ID = "6ab80f10-d79c-4fa2-b441-922ed6feb630"
RUN = f"/runs/{FIXTURE_RUN_ID}"




def get(standin: StandIn, path: str, key: str) -> httpx.Response:
    return standin.http.get(path, headers={"x-api-key": key})


# --- the table, as a pure function ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", f"/runs/{uuid.uuid4()}", "run_lookup"),
        ("GET", f"/api/v1/runs/{uuid.uuid4()}", "run_lookup"),
        ("GET", f"/api/v2/runs/{uuid.uuid4()}", "v2_run_lookup"),
        ("POST", "/runs/query", "run_query"),
        ("POST", "/api/v1/runs/query", "run_query"),
        ("POST", "/api/v2/runs/query", "v2_run_query"),
        ("PATCH", f"/runs/{uuid.uuid4()}", "run_patch"),
        ("GET", "/examples", "examples_get"),
        ("GET", f"/v1/platform/datasets/{uuid.uuid4()}/examples", "examples_get"),
        ("POST", "/examples/bulk", "default"),
        ("GET", "/feedback", "default"),
        ("GET", "/api/v2/runs/rules", "default"),
        ("GET", "/info", "info"),
    ],
)
def test_each_request_falls_under_its_row_of_the_cloud_table(method: str, path: str, expected: str) -> None:
    assert category(method, path) == expected


def test_cloud_table_figures_are_the_docs_ones() -> None:
    assert CLOUD_LIMITS["run_lookup"] == Limit(30, 60)
    assert CLOUD_LIMITS["run_query"] == Limit(15, 10)
    assert CLOUD_LIMITS["v2_run_query"] == Limit(300, 10)  # langchain-ai/docs#5652
    assert CLOUD_LIMITS["v2_run_lookup"] == Limit(300, 10)  # langchain-ai/docs#5652
    assert CLOUD_LIMITS["run_patch"] == Limit(2000, 10)
    assert CLOUD_LIMITS["examples_get"] == Limit(5000, 60)
    assert CLOUD_LIMITS["default"] == Limit(1000, 10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_refuses_where_a_restarting_window_would_admit() -> None:
    clock = Clock()
    windows = SlidingWindows(clock)
    limit = Limit(3, 1.0)
    clock.now = 100.9
    assert [windows.admit("k", "x", limit) for _ in range(4)] == [True, True, True, False]
    clock.now = 101.1  # a window restarting on the second would admit again here
    assert windows.admit("k", "x", limit) is False
    clock.now = 101.9  # one full window after the three
    assert windows.admit("k", "x", limit) is True


def test_refused_requests_use_no_budget_and_keys_are_separate() -> None:
    clock = Clock()
    windows = SlidingWindows(clock)
    limit = Limit(1, 10.0)
    assert windows.admit("a", "x", limit) is True
    assert [windows.admit("a", "x", limit) for _ in range(5)] == [False] * 5
    assert windows.admit("b", "x", limit) is True
    clock.now += 10
    assert windows.admit("a", "x", limit) is True


# --- over HTTP ------------------------------------------------------------------------------------


def test_run_lookups_are_limited_to_30_a_minute_per_key_without_retry_after(fresh: StandIn) -> None:
    key = fresh_key()
    assert [get(fresh, RUN, key).status_code for _ in range(30)] == [200] * 30
    refused = get(fresh, RUN, key)
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    assert get(fresh, RUN, fresh_key()).status_code == 200  # another key, another window
    stats = fresh.stats()
    assert stats["rate_limited"] == {"GET /runs/{run_id}": 1}
    assert stats["requests"]["GET /runs/{run_id}"] == 32


def test_v1_run_queries_allow_15_per_10_seconds_and_v2_ones_have_their_own_300(fresh: StandIn) -> None:
    key = fresh_key()
    v1 = {"session": [str(uuid.uuid4())], "limit": 10}
    v2 = {"project_ids": [str(uuid.uuid4())]}
    answers = [fresh.http.post("/runs/query", json=v1, headers={"x-api-key": key}).status_code for _ in range(16)]
    assert answers == [200] * 15 + [429]
    v2_answers = [fresh.http.post("/api/v2/runs/query", json=v2, headers={"x-api-key": key})
                  for _ in range(301)]
    assert [a.status_code for a in v2_answers] == [200] * 300 + [429]
    assert "retry-after" not in v2_answers[-1].headers
    assert fresh.stats()["rate_limited"] == {"POST /runs/query": 1, "POST /api/v2/runs/query": 1}


def test_v2_retrieves_allow_300_per_10_seconds_apart_from_v1_lookups(fresh: StandIn) -> None:
    key = fresh_key()
    fresh.limits(run_lookup=(2, 60))
    assert [get(fresh, RUN, key).status_code for _ in range(3)] == [200, 200, 429]
    project = next(r["session_id"] for r in fresh.runs() if r["id"] == FIXTURE_RUN_ID)
    v2 = [get(fresh, f"/api/v2{RUN}?project_id={project}", key) for _ in range(301)]
    assert [a.status_code for a in v2] == [200] * 300 + [429]
    assert "retry-after" not in v2[-1].headers


def test_self_hosted_spelling_shares_the_run_lookup_window(fresh: StandIn) -> None:
    key = fresh_key()
    fresh.limits(run_lookup=(2, 60))
    assert get(fresh, RUN, key).status_code == 200
    assert get(fresh, f"/api/v1{RUN}", key).status_code == 200
    assert get(fresh, f"/api/v1{RUN}", key).status_code == 429


def test_other_requests_fall_under_the_default_row_and_examples_under_their_own(fresh: StandIn) -> None:
    key = fresh_key()
    fresh.limits(default=(3, 60))
    assert [get(fresh, "/datasets", key).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert get(fresh, "/feedback", key).status_code == 429
    assert get(fresh, "/examples", key).status_code == 200
    assert get(fresh, RUN, key).status_code == 200


def test_window_ends_and_requests_are_admitted_again(fresh: StandIn) -> None:
    key = fresh_key()
    fresh.limits(run_lookup=(2, 1.0))
    assert [get(fresh, RUN, key).status_code for _ in range(3)] == [200, 200, 429]
    deadline = time.monotonic() + 10
    while get(fresh, RUN, key).status_code == 429:
        assert time.monotonic() < deadline, "the window never ended"
        time.sleep(0.05)


def test_admin_and_object_routes_are_not_limited(fresh: StandIn) -> None:
    fresh.limits(default=(1, 60), info=(1, 60))
    for _ in range(5):
        fresh.stats()
    url = fresh.put_object({"q": 1})
    assert [httpx.get(url).status_code for _ in range(3)] == [200] * 3


def test_sdk_sees_a_429_as_a_rate_limit_error(fresh: StandIn) -> None:
    key = fresh_key()
    fresh.limits(default=(1, 60))
    no_retry = LangSmithRetry(total=0, status_forcelist=[], raise_on_status=False, allowed_methods=None)
    client = Client(api_url=fresh.url, api_key=key, auto_batch_tracing=False, retry_config=no_retry)
    list(client.list_datasets(limit=1))
    with pytest.raises(LangSmithRateLimitError):
        list(client.list_datasets(limit=1))


def test_admin_switch_lifts_and_restores_the_limits(fresh: StandIn) -> None:
    key = fresh_key()
    fresh.limits(enabled=False)
    assert {get(fresh, RUN, key).status_code for _ in range(40)} == {200}
    assert fresh.admin("GET", "limits")["enabled"] is False
    fresh.limits(enabled=True)
    assert [get(fresh, RUN, key).status_code for _ in range(31)][-1] == 429


def test_reset_restores_cloud_limits(fresh: StandIn) -> None:
    fresh.limits(enabled=False, run_lookup=(1, 1))
    fresh.admin("POST", "reset")
    limits = fresh.admin("GET", "limits")
    assert limits["enabled"] is True
    assert limits["limits"]["run_lookup"] == {"count": 30, "seconds": 60}


@pytest.mark.parametrize("switch", ["flag", "env"])
def test_no_limits_switch_at_start(switch: str) -> None:
    port = free_port()
    args = ["--port", str(port), "--preload-fixture"] + (["--no-limits"] if switch == "flag" else [])
    env = {"STANDIN_NO_LIMITS": "1"} if switch == "env" else {"STANDIN_NO_LIMITS": ""}
    proc = python_module("lswh_standin", *args, env=env, name="standin-no-limits")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/info", proc)
        with httpx.Client(base_url=url) as http:
            key = fresh_key()
            assert {http.get(RUN, headers={"x-api-key": key}).status_code for _ in range(40)} == {200}
            assert http.get("/_admin/limits").json()["enabled"] is False
    finally:
        proc.stop()


@pytest.mark.parametrize(("env", "enabled"), [({}, True), ({"STANDIN_NO_LIMITS": "1"}, False)])
def test_lswh_dev_starts_the_standin_with_limits_unless_lifted(
    start_dev: Any, env: dict[str, str], enabled: bool  # noqa: F811
) -> None:
    _, lines = start_dev(workers=1, env={"STANDIN_NO_LIMITS": "", **env})
    limits = httpx.get(f"{lines['LangSmith stand-in']}/_admin/limits").json()
    assert limits["enabled"] is enabled
