"""LangSmith's rate-limit table as code (lswh_core/ratelimits.py): routes, defaults, the override
format, and its validation at start."""

from __future__ import annotations

import pytest

from lswh_core.ratelimits import DEFAULT_LIMITS, Limit, format_limits, parse_limits, route_of
from lswh_core.settings import Settings, SettingsError
from tests.support.procs import lswh

RUN = "6ab80f10-d79c-4fa2-b441-922ed6feb630"


@pytest.mark.parametrize(("method", "path", "route"), [
    # GET /runs/{uuid} or /api/v1/runs/{uuid}: "Run lookup", 30 / 60
    ("GET", f"/runs/{RUN}", "run_read"),
    ("get", f"/api/v1/runs/{RUN}", "run_read"),
    ("GET", f"https://api.smith.langchain.com/runs/{RUN}", "run_read"),
    ("GET", f"https://ls.example.com/langsmith/api/v1/runs/{RUN}/", "run_read"),
    ("GET", f"/runs/{RUN}?exclude_s3_stored_attributes=true", "run_read"),
    # the SDK's v2 retrieve (client.runs.retrieve_v2): its own row since langchain-ai/docs#5652, 300 / 10
    ("GET", f"/api/v2/runs/{RUN}?project_id=p&selects=INPUTS", "v2_run_read"),
    ("GET", f"https://ls.example.com/langsmith/api/v2/runs/{RUN}/", "v2_run_read"),
    ("GET", f"/runs/{RUN}/share", "other"),
    ("GET", f"/api/v2/runs/{RUN}/url", "other"),
    ("GET", "/runs/not-a-run-id", "other"),
    # POST /runs/query: "Run query (API)", 15 / 10
    ("POST", "/runs/query", "run_query"),
    ("POST", "/api/v1/runs/query", "run_query"),
    ("POST", "https://ls.example.com/langsmith/api/runs/query", "run_query"),
    # the SDK's v2 query (client.runs.query_v2): its own row since langchain-ai/docs#5652, 300 / 10
    ("POST", "/api/v2/runs/query", "v2_run_query"),
    ("POST", "https://eu.api.smith.langchain.com/api/v2/runs/query", "v2_run_query"),
    ("POST", "https://ls.example.com/langsmith/api/v2/runs/query?x=1", "v2_run_query"),
    ("GET", "/runs/query", "other"),
    # PATCH containing /runs: 2000 / 10
    ("PATCH", f"/runs/{RUN}", "runs_patch"),
    ("PATCH", f"/api/v1/runs/{RUN}", "runs_patch"),
    # GET containing /examples: 5000 / 60
    ("GET", "/examples?dataset=d&limit=100", "examples_get"),
    ("GET", f"/api/v1/examples/{RUN}", "examples_get"),
    ("GET", f"/datasets/{RUN}/examples", "examples_get"),
    # everything else with an API key: 1000 / 10
    ("POST", "/examples", "other"),
    ("PATCH", f"/examples/{RUN}", "other"),
    ("PATCH", f"/v1/platform/datasets/{RUN}/examples", "other"),
    ("POST", f"/v1/platform/datasets/{RUN}/examples", "other"),
    ("GET", "/datasets?name=langsmith-webhook-examples", "other"),
    ("GET", "/feedback?run=x&limit=100", "other"),
    ("GET", "/info", "other"),
    ("POST", "/runs/batch", "other"),
])
def test_route_of_follows_langsmiths_table(method: str, path: str, route: str) -> None:
    assert route_of(method, path) == route


def test_defaults_are_langsmith_clouds_published_limits() -> None:
    assert dict(DEFAULT_LIMITS) == {
        "run_read": Limit(30, 60.0),
        "run_query": Limit(15, 10.0),
        "v2_run_read": Limit(300, 10.0),
        "v2_run_query": Limit(300, 10.0),
        "runs_patch": Limit(2000, 10.0),
        "examples_get": Limit(5000, 60.0),
        "other": Limit(1000, 10.0),
    }


def test_empty_means_the_defaults() -> None:
    assert parse_limits("") == dict(DEFAULT_LIMITS)
    assert parse_limits("  ") == dict(DEFAULT_LIMITS)


def test_named_routes_override_and_the_rest_keep_their_defaults() -> None:
    limits = parse_limits(" run_query = 60/10s , run_read=120/1m, other=100/s, examples_get=off ")
    assert limits == {
        "run_read": Limit(120, 60.0),
        "run_query": Limit(60, 10.0),
        "v2_run_read": Limit(120, 60.0),
        "v2_run_query": Limit(60, 10.0),
        "runs_patch": DEFAULT_LIMITS["runs_patch"],
        "other": Limit(100, 1.0),
    }


def test_older_names_keep_governing_the_v2_routes_unless_those_are_named() -> None:
    """`run_query` / `run_read` set the v2 query and retrieve as they did before those had rows of
    their own; naming a v2 route sets it apart, in either order."""
    assert parse_limits("run_query=60/10s")["v2_run_query"] == Limit(60, 10.0)
    assert parse_limits("run_read=off").keys() == DEFAULT_LIMITS.keys() - {"run_read", "v2_run_read"}
    apart = parse_limits("v2_run_query=250/10s,run_query=10/10s,run_read=off")
    assert (apart["run_query"], apart["v2_run_query"]) == (Limit(10, 10.0), Limit(250, 10.0))
    assert "run_read" not in apart and "v2_run_read" not in apart
    alone = parse_limits("v2_run_read=100/10s")
    assert (alone["run_read"], alone["v2_run_read"]) == (DEFAULT_LIMITS["run_read"], Limit(100, 10.0))
    assert parse_limits("run_query=5/10s,v2_run_query=off")["run_query"] == Limit(5, 10.0)
    assert "v2_run_query" not in parse_limits("run_query=5/10s,v2_run_query=off")


@pytest.mark.parametrize(("value", "limit"), [
    ("15/10", Limit(15, 10.0)),
    ("15/10s", Limit(15, 10.0)),
    ("15/2.5S", Limit(15, 2.5)),
    ("3/500ms", Limit(3, 0.5)),
    ("30/1m", Limit(30, 60.0)),
    ("1000/h", Limit(1000, 3600.0)),
    ("7 / 10 s", Limit(7, 10.0)),
])
def test_window_units(value: str, limit: Limit) -> None:
    assert parse_limits(f"run_query={value}")["run_query"] == limit


def test_off_alone_switches_every_budget_off() -> None:
    assert parse_limits("off") == {}
    assert parse_limits(" OFF ") == {}


def test_formatted_limits_parse_back() -> None:
    for limits in (dict(DEFAULT_LIMITS), parse_limits("run_read=off,other=3/500ms,run_query=1/1.5s"),
                   parse_limits("run_query=1/1.5s,v2_run_query=off"), {}):
        assert parse_limits(format_limits(limits)) == limits


@pytest.mark.parametrize(("raw", "complaint"), [
    ("run_reads=30/60s", "unknown route 'run_reads'"),
    ("30/60s", "route=count/window or route=off"),
    ("run_read=", "route=count/window or route=off"),
    ("=30/60s", "route=count/window or route=off"),
    ("run_read=30", "the limit is count/window"),
    ("run_read=30/", "the limit is count/window"),
    ("run_read=thirty/60s", "the limit is count/window"),
    ("run_read=30/60x", "the limit is count/window"),
    ("run_read=-1/60s", "the limit is count/window"),
    ("run_read=0/60s", "the count must be between 1 and 100,000"),
    ("run_read=100001/60s", "the count must be between 1 and 100,000"),
    ("run_read=30/0s", "the window must be between 1ms and 24h"),
    ("run_read=30/25h", "the window must be between 1ms and 24h"),
    ("run_read=30/60s,run_read=10/10s", "run_read is given twice"),
    ("run_read=30/60s;run_query=1/1s", "the limit is count/window"),
])
def test_a_bad_value_names_the_variable_and_the_entry(raw: str, complaint: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_limits(raw)
    message = str(caught.value)
    assert message.startswith("LSWH_LANGSMITH_RATE_LIMITS: ")
    assert complaint in message


def test_settings_read_the_limits_from_the_environment() -> None:
    assert Settings.from_env({}).langsmith_rate_limits == dict(DEFAULT_LIMITS)
    assert Settings().langsmith_rate_limits == dict(DEFAULT_LIMITS)
    custom = Settings.from_env({"LSWH_LANGSMITH_RATE_LIMITS": "run_query=30/10s"}).langsmith_rate_limits
    assert custom["run_query"] == Limit(30, 10.0)
    with pytest.raises(SettingsError, match="LSWH_LANGSMITH_RATE_LIMITS"):
        Settings.from_env({"LSWH_LANGSMITH_RATE_LIMITS": "run_query=fast"})


@pytest.mark.parametrize("command", [["worker", "--burst"], ["ingress"]])
def test_a_bad_value_stops_the_process_at_start_with_exit_2(command: list[str]) -> None:
    proc = lswh(*command, env={"LSWH_LANGSMITH_RATE_LIMITS": "run_query=15/10s,run_read=lots",
                               "LSWH_SECRETS": "s3cret", "REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        assert proc.popen.wait(timeout=60) == 2
    finally:
        proc.stop()
    assert "LSWH_LANGSMITH_RATE_LIMITS" in proc.output()
    assert "'run_read=lots'" in proc.output()
