"""Each request the worker really sends draws from the budget its row of LangSmith's table names
(lswh_core/ratelimits.py), and a backfill of 10,000 runs under Cloud's limits meets no 429.

The routes are checked on requests actually sent, not on the constants: tests/support/route_probe.py
runs the worker's LangSmith door in a process of its own against the stand-in and reports, per call,
the budget each attempt drew from, the requests the door counted and the stand-in's own count.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.backfill_load import backfill, seed, verify
from tests.support.procs import ROOT, RedisServer
from tests.support.stack import SECRET, Pipeline, StandIn, fresh_key, fresh_run

# call -> (the budget route its row names, the request it sends as the stand-in counts it)
CLOUD = {
    "read_runs": ("v2_run_query", "POST /api/v2/runs/query"),  # SmithDB runs query, docs#5652
    "match_runs": ("v2_run_query", "POST /api/v2/runs/query"),
    "retrieve_v2": ("v2_run_read", "GET /api/v2/runs/{run_id}"),  # SmithDB runs retrieve, docs#5652
    "read_run_v1": ("run_read", "GET /runs/{run_id}"),  # "Run lookup", 30 / 60
    "examples": ("examples_get", "GET /examples"),  # GET containing /examples, 5000 / 60
    "feedback": ("other", "GET /feedback"),  # the default row, 1000 / 10
    "rules": ("other", "GET /api/v2/runs/rules"),
}
V1_ONLY = {"read_runs": ("run_query", "POST /runs/query")}  # "Run query (API)", 15 / 10


def probe(standin: StandIn, redis_url: str, calls: list[str]) -> dict[str, dict[str, Any]]:
    project = str(uuid.uuid4())
    run = fresh_run(session_id=project, start_time=(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat(),
                    inputs={"q": 1}, outputs={"a": 1})
    standin.add_runs([run])
    env = {**os.environ, "REDIS_URL": redis_url, "LSWH_SECRETS": SECRET, "LANGSMITH_ENDPOINT": standin.url,
           "LANGSMITH_API_KEY": fresh_key(), "LSWH_DATASET": f"ds-{uuid.uuid4().hex[:8]}"}
    done = subprocess.run([sys.executable, "-m", "tests.support.route_probe", standin.url, run["id"], project, *calls],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {line["call"]: line for line in lines}


@pytest.fixture(scope="module")
def probed(own_standin: StandIn, redis_server: RedisServer) -> Iterator[dict[str, dict[str, dict[str, Any]]]]:
    url = f"redis://127.0.0.1:{redis_server.port}/41"
    cloud = probe(own_standin, url, list(CLOUD))
    own_standin.use_flags("v1-only")
    try:
        v1 = probe(own_standin, url, list(V1_ONLY))
    finally:
        own_standin.use_flags("cloud")
    yield {"cloud": cloud, "v1-only": v1}


@pytest.mark.parametrize(("profile", "call", "route", "request_line"),
                         [("cloud", c, r, q) for c, (r, q) in CLOUD.items()]
                         + [("v1-only", c, r, q) for c, (r, q) in V1_ONLY.items()])
def test_each_request_sent_draws_from_the_budget_its_row_names(
        probed: dict[str, dict[str, dict[str, Any]]], profile: str, call: str, route: str, request_line: str) -> None:
    seen = probed[profile][call]
    sent = sum(seen["sent"].values())
    assert sent >= 1, seen
    # what reached the stand-in is exactly what the door sent, and all of it is this row's request
    assert seen["standin"] == {request_line: sent}, seen
    # every attempt drew one slot, from this row's budget and no other
    assert seen["budget"] == {route: sent}, seen


# --- 10,000 runs under Cloud's limits ---------------------------------------------------------------


@pytest.mark.slow  # 10,000 runs seeded, 1,000 delivered, 9,000 written: 10-60 s on two busy cores
def test_backfill_of_10000_runs_under_clouds_limits_meets_no_429(redis_server: RedisServer, own_standin: StandIn
                                                                 ) -> None:
    own_standin.limits(cloud=True, enabled=True)
    stack = Pipeline(redis_server, own_standin, db=42, workers=2, LANGSMITH_API_KEY=fresh_key())
    try:
        scenario = seed(stack, 10_000)
        measured = backfill(stack, scenario, timeout=600)
        assert measured.returncode == 0, measured.stderr[-3000:]
        assert measured.rate_limited == 0, measured
        verify(stack, scenario)  # every run exactly once, corrections joined
        assert measured.requests_per_1000 <= 30, measured
    finally:
        stack.stop()
