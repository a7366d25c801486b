"""The LangSmith door's decisions (pure): which query reads which run, windows, fields, retries."""

from __future__ import annotations

import datetime as dt

from workers.build.examples import merged_metadata
from workers.langsmith.clients import openapi_base_url
from workers.langsmith.door import QueryBackend, RunRef, plan_reads, selects, start_window
from workers.langsmith.transport import MAX_RATE_LIMITED, MAX_SLEPT_RETRY_AFTER, STATUS_RETRIES, _decide

P1, P2 = "6a3be6a2-9a8c-4fc8-b4c6-a8983b286cc5", "11111111-2222-3333-4444-555555555555"
T = "2024-04-05T01:28:54.734491+00:00"


def test_locatable_runs_go_to_v2_grouped_by_project() -> None:
    refs = [RunRef("a", P1, T), RunRef("b", P2, T), RunRef("c", P1, T)]
    plan = plan_reads(refs, QueryBackend.BOTH)
    assert {p: [r.id for r in rs] for p, rs in plan.v2.items()} == {P1: ["a", "c"], P2: ["b"]}
    assert plan.v1 == [] and plan.unlocatable == []


def test_run_without_project_or_start_time_uses_v1_where_it_exists() -> None:
    refs = [RunRef("a", None, T), RunRef("b", P1, None), RunRef("c", P1, "not a time")]
    plan = plan_reads(refs, QueryBackend.BOTH)
    assert [r.id for r in plan.v1] == ["a", "b", "c"] and not plan.v2


def test_run_without_project_cannot_be_located_on_a_v2_only_server() -> None:
    plan = plan_reads([RunRef("a", None, T), RunRef("b", P1, T)], QueryBackend.V2_ONLY)
    assert [r.id for r in plan.unlocatable] == ["a"]
    assert [r.id for r in plan.v2[P1]] == ["b"]


def test_v1_only_server_reads_every_run_through_v1() -> None:
    plan = plan_reads([RunRef("a", P1, T)], QueryBackend.V1_ONLY)
    assert [r.id for r in plan.v1] == ["a"] and not plan.v2


def test_window_holds_every_start_time_however_old() -> None:
    low, high = start_window([RunRef("a", P1, "2020-01-01T00:00:00Z"), RunRef("b", P1, T)])
    assert low < dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert high > dt.datetime(2024, 4, 5, 1, 28, 54, tzinfo=dt.UTC)


def test_selects_name_only_the_fields_needed() -> None:
    assert selects(inputs=True, outputs=False) == ["ID", "NAME", "TRACE_ID", "INPUTS"]
    assert "OUTPUTS" in selects(inputs=False, outputs=True)
    assert "INPUTS" not in selects(inputs=False, outputs=True)


def test_generated_client_base_url_drops_the_self_hosted_api_suffix() -> None:
    assert openapi_base_url("https://ls.example.com/api/v1") == "https://ls.example.com"
    assert openapi_base_url("https://api.smith.langchain.com") == "https://api.smith.langchain.com"
    assert openapi_base_url("http://127.0.0.1:1984/") == "http://127.0.0.1:1984"


def test_update_keeps_others_metadata_and_the_split() -> None:
    stored = {"metadata": {"reviewer": "ana", "dataset_split": ["test"], "rule_id": "old", "run_id": "r"}}
    merged = merged_metadata(stored, {"rule_id": "new", "run_id": "r", "feedback": {"x": 1}})
    assert merged == {"reviewer": "ana", "dataset_split": ["test"], "rule_id": "new", "run_id": "r",
                      "feedback": {"x": 1}}


def test_429_pauses_then_gives_up_to_the_job_after_many_windows() -> None:
    assert _decide(429, None, 0, 0) == "pause"
    assert _decide(429, None, MAX_RATE_LIMITED, 0) == "return"


def test_5xx_is_retried_a_bounded_number_of_times() -> None:
    assert _decide(503, None, 0, 0) == "retry"
    assert _decide(503, None, 0, STATUS_RETRIES) == "return"
    assert _decide(404, None, 0, 0) == "return"


def test_a_long_retry_after_is_never_slept() -> None:
    assert _decide(503, MAX_SLEPT_RETRY_AFTER + 1, 0, 0) == "return"
    assert _decide(429, MAX_SLEPT_RETRY_AFTER + 1, 0, 0) == "return"
    assert _decide(503, 2.0, 0, 0) == "retry"


def test_a_short_retry_after_on_a_429_is_slept_not_a_whole_window() -> None:
    assert _decide(429, 2.0, 0, 0) == "retry"
    assert _decide(429, 2.0, 0, STATUS_RETRIES) == "return"


def test_metric_routes_hide_ids_so_labels_stay_few() -> None:
    from workers.langsmith.transport import route_label

    assert route_label("PATCH", "/v1/platform/datasets/6a3be6a2-9a8c-4fc8-b4c6-a8983b286cc5/examples") == \
        "PATCH /v1/platform/datasets/{id}/examples"
    assert route_label("POST", "/api/v2/runs/query") == "POST /api/v2/runs/query"
    assert route_label("GET", "/runs/6a3be6a29a8c4fc8b4c6a8983b286cc5") == "GET /runs/{id}"
