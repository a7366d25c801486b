"""The stand-in's `/info` switches and the servers they describe (standin/lswh_standin/profiles.py), and its
strict date-times: what the worker's /info handling and RFC 3339 times are tested against."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from langsmith import Client
from langsmith._internal._v2_migration_utils import QueryBackend, get_query_backend

from tests.support.procs import free_port, python_module
from tests.support.stack import StandIn, fresh_key


def _info(standin: StandIn) -> httpx.Response:
    return standin.http.get("/info")


def test_info_fails_as_often_as_asked_then_answers(fresh: StandIn) -> None:
    fresh.fail_info(2)
    assert [_info(fresh).status_code for _ in range(3)] == [503, 503, 200]
    assert fresh.admin("GET", "info")["fail"] == 0


def test_the_sdk_caches_a_failed_info_as_empty_for_the_clients_life(fresh: StandIn) -> None:
    """Why the worker reads /info itself (issue 16): one failure and the SDK's client says
    "no flags, no version" for good, so every decision made from it is a guess."""
    client = Client(api_url=fresh.url, api_key=fresh_key(), auto_batch_tracing=False,
                    retry_config={"max_retries": 0})
    fresh.fail_info(1)
    assert not client.info.version and not client.info.instance_flags
    assert _info(fresh).status_code == 200  # the server has recovered...
    assert not client.info.version  # ...the client never asks again


def test_a_standin_started_with_info_failures_answers_503_that_many_times() -> None:
    server = StandIn(info_failures=3)
    try:
        assert [_info(server).status_code for _ in range(4)] == [503, 503, 503, 200]
    finally:
        server.stop()


@pytest.mark.parametrize("body", [{}, {"fail": -1}, {"fail": "3"}, {"fail": True}, {"profile": "nope"}, []])
def test_a_bad_info_switch_is_refused_saying_what_it_takes(fresh: StandIn, body: Any) -> None:
    response = fresh.http.post("/_admin/info", json=body)
    assert response.status_code == 400
    assert '"fail"' in response.json()["detail"]


@pytest.mark.parametrize(("profile", "version"), [("v2-only-unversioned", ""), ("v2-only-old", "0.16.9")])
def test_smithdb_only_servers_with_an_empty_or_old_version_have_no_v1_run_reads(
        fresh: StandIn, profile: str, version: str) -> None:
    fresh.use_flags(profile)
    info = _info(fresh).json()
    assert info["version"] == version
    assert get_query_backend(info["instance_flags"]) is QueryBackend.SMITHDB_ONLY
    headers = {"x-api-key": fresh_key()}
    assert fresh.http.post("/runs/query", json={"id": [str(uuid.uuid4())]}, headers=headers).status_code == 404
    window = {"project_ids": [str(uuid.uuid4())], "min_start_time": "2024-04-05T00:00:00Z"}
    assert fresh.http.post("/api/v2/runs/query", json=window, headers=headers).status_code == 200


def test_a_server_older_than_0_16_14_has_queues_but_no_queue_items(fresh: StandIn) -> None:
    queue_id = fresh.add_queue("review")
    fresh.use_flags("v2-only-old")
    headers = {"x-api-key": fresh_key()}
    assert fresh.http.get("/api/v1/annotation-queues", params={"name": "review"}, headers=headers).status_code == 200
    item = {"items": [{"item_type": "RUN", "run_id": str(uuid.uuid4()), "start_time": "2024-04-05T01:28:54Z"}]}
    path = f"/api/v1/platform/annotation-queues/{queue_id}/items"
    assert fresh.http.post(path, json=item, headers=headers).status_code == 404
    fresh.use_flags("v2-only")
    assert fresh.http.post(path, json=item, headers=headers).status_code == 200


def test_a_queue_item_start_time_without_a_timezone_is_refused(fresh: StandIn) -> None:
    queue_id = fresh.add_queue("review")
    headers = {"x-api-key": fresh_key()}
    path = f"/api/v1/platform/annotation-queues/{queue_id}/items"

    def add(start_time: str) -> httpx.Response:
        item = {"item_type": "RUN", "run_id": str(uuid.uuid4()), "start_time": start_time}
        return fresh.http.post(path, json={"items": [item]}, headers=headers)

    naive = add("2024-04-05T01:28:54.085646")  # the docs' webhook example: no timezone
    assert naive.status_code == 422
    assert "date-time" in naive.json()["detail"]
    assert add("2024-04-05T01:28:54.085646+00:00").status_code == 200
    assert add("2024-04-05T01:28:54.085646Z").status_code == 200
    assert len(fresh.queue_items(queue_id)) == 2


@pytest.mark.parametrize("field", ["min_start_time", "max_start_time"])
def test_a_v2_query_window_without_a_timezone_is_refused(fresh: StandIn, field: str) -> None:
    headers = {"x-api-key": fresh_key()}
    body = {"project_ids": [str(uuid.uuid4())], field: "2024-04-05T01:28:54"}
    refused = fresh.http.post("/api/v2/runs/query", json=body, headers=headers)
    assert refused.status_code == 422 and field in refused.json()["detail"]
    body[field] = "2024-04-05T01:28:54+00:00"
    assert fresh.http.post("/api/v2/runs/query", json=body, headers=headers).status_code == 200


@pytest.mark.parametrize(("args", "env", "said"), [
    (["--info-failures", "-1"], {}, "must be 0 or more"),
    ([], {"STANDIN_INFO_FAILURES": "x"}, "invalid int value: 'x'"),
])
def test_a_bad_info_failures_value_stops_the_standin_saying_why(args: list[str], env: dict[str, str],
                                                                said: str) -> None:
    proc = python_module("lswh_standin", "--port", str(free_port()), *args, env=env, name="standin-bad")
    try:
        assert proc.popen.wait(timeout=30) == 2
        assert said in proc.output()
    finally:
        proc.stop()
