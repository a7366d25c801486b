"""LangSmith's `/info` is read, never guessed (issue 16): a worker whose `/info` fails at start
takes no jobs and says so (log, `lswh status`, /metrics) while staying alive; once `/info`
answers it reads runs on the backend the server has and writes examples on the multipart path
the server's flags name. The door re-reads `/info` when asked, so an upgraded server's flags count."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lswh_core.egress import Route
from tests.support.procs import RedisServer, free_port, lswh, wait_until
from tests.support.stack import Pipeline, StandIn, delivery, fresh_key, fresh_run
from workers.errors import InfoUnknown
from workers.langsmith.budget import route_of
from workers.langsmith.clients import ClientConfig
from workers.langsmith.door import LangSmith, QueryBackend

WAITING = "waiting for LangSmith /info — takes no jobs"
V1_QUERY, V2_QUERY = "POST /runs/query", "POST /api/v2/runs/query"
MULTIPART, BULK = "POST /v1/platform/datasets/{dataset_id}/examples", "POST /examples/bulk"
DB = 19  # this module's Redis database (see `grep -rn "db=" tests`)


@pytest.fixture
def smithdb_only(own_standin: StandIn) -> Iterator[StandIn]:
    """The module's stand-in as a SmithDB-only server: a v1 run query there is a 404."""
    own_standin.admin("POST", "reset")
    own_standin.use_flags("v2-only")
    yield own_standin
    own_standin.admin("POST", "reset")


def api_only_runs(standin: StandIn, n: int) -> list[dict[str, Any]]:
    """Delivered without inputs or outputs (as the docs' payload): only the API has them."""
    runs = [fresh_run() for _ in range(n)]
    standin.add_runs([{**run, "inputs": {"q": i}, "outputs": {"a": i}} for i, run in enumerate(runs)])
    return runs


def requests(standin: StandIn) -> dict[str, int]:
    return {route: count for route, count in standin.stats()["requests"].items()}


def status_text(env: dict[str, str]) -> str:
    proc = lswh("status", env=env, name="lswh-status")
    proc.popen.wait(timeout=60)
    proc.stop()
    return proc.output()


def sample(url: str, name: str) -> float:
    """A sample's value from a /metrics page (`name` with its labels, as exported)."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200  # the process answers: alive to a liveness check
    for line in response.text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported at {url}")


def gauge(port: int) -> float:
    return sample(f"http://127.0.0.1:{port}/metrics", "lswh_langsmith_info_waiting")


def test_a_worker_whose_info_fails_waits_then_reads_the_right_backend(redis_server: RedisServer,
                                                                      smithdb_only: StandIn) -> None:
    standin = smithdb_only
    standin.fail_info(1_000_000)  # a server that does not answer /info for now
    metrics_port = free_port()
    stack = Pipeline(redis_server, standin, db=DB, LSWH_METRICS_PORT=str(metrics_port))
    try:
        runs = api_only_runs(standin, 3)
        response = stack.post(delivery(runs))
        assert response.status_code == 202, response.text
        wait_until(lambda: WAITING in status_text(stack.env), timeout=60, interval=1, what="the worker to wait")
        assert gauge(metrics_port) == 1
        assert sample(f"{stack.url}/metrics", 'lswh_workers{state="waiting_info"}') == 1
        time.sleep(6)  # more than one more attempt at /info
        sent = requests(standin)
        # Nothing read or written with a guessed server: no run query of either kind, no example.
        assert sent.get(V1_QUERY, 0) == 0 and sent.get(V2_QUERY, 0) == 0, sent
        assert sent.get(MULTIPART, 0) == 0 and sent.get(BULK, 0) == 0, sent
        assert sent["GET /info"] >= 2, sent
        assert stack.workers[0].alive()
        assert standin.examples_by_run([r["id"] for r in runs], stack.dataset) == {}
        said = [line for line in stack.workers[0].output().splitlines() if "waiting for LangSmith /info" in line]
        assert 1 <= len(said) <= 2, said  # once a minute, not once an attempt

        standin.fail_info(0)  # /info answers again
        figures = stack.wait_accounted(response.json()["delivery_id"], 3, timeout=60)
        assert (figures["written"], figures["failed"]) == (3, 0), figures
        sent = requests(standin)
        assert sent.get(V1_QUERY, 0) == 0 and sent[V2_QUERY] >= 1, sent  # SmithDB only: v2, never v1
        assert sent[MULTIPART] >= 1 and sent.get(BULK, 0) == 0, sent  # the flags' multipart path
        examples = standin.examples_by_run([r["id"] for r in runs], stack.dataset)
        assert {r["id"]: examples[r["id"]][0]["outputs"] for r in runs} == {
            r["id"]: {"a": i} for i, r in enumerate(runs)}
        wait_until(lambda: gauge(metrics_port) == 0, timeout=10, what="the gauge to drop")
        assert WAITING not in status_text(stack.env)
    finally:
        stack.stop()


def door(standin: StandIn) -> LangSmith:
    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    config = ClientConfig(api_url=standin.url, api_key=fresh_key(), workspace_id=None, egress=Route.to(standin.url))
    return LangSmith(call=call, budget=None, route_of=route_of, config=config)


def test_a_failed_info_read_is_never_an_answer(smithdb_only: StandIn) -> None:
    langsmith = door(smithdb_only)
    smithdb_only.fail_info(100)
    with pytest.raises(InfoUnknown, match="/info could not be read"):
        langsmith.refresh_info()
    assert langsmith.known_info() is None and langsmith.info_age() is None
    with pytest.raises(InfoUnknown):
        langsmith.backend()  # not "v1 only", which an empty answer would give
    smithdb_only.fail_info(0)
    assert langsmith.backend() is QueryBackend.V2_ONLY


def test_a_reread_info_changes_the_backend_and_the_sdks_flags(smithdb_only: StandIn) -> None:
    """A self-hosted server upgraded (here: moved to v1 only) while the worker runs."""
    langsmith = door(smithdb_only)
    assert langsmith.refresh_info().version == "0.18.0"
    assert langsmith.backend() is QueryBackend.V2_ONLY
    smithdb_only.use_flags("v1-only")
    assert langsmith.backend() is QueryBackend.V2_ONLY  # known until read again
    langsmith.refresh_info()
    assert langsmith.backend() is QueryBackend.V1_ONLY
    # The SDK client was given the new answer: its own reading of the flags agrees, without a read of its own.
    before = requests(smithdb_only)["GET /info"]
    assert langsmith.client.info.version == "0.15.0"
    assert requests(smithdb_only)["GET /info"] == before


def test_smithdb_only_with_an_empty_version_reads_v2(smithdb_only: StandIn) -> None:
    smithdb_only.use_flags("v2-only-unversioned")
    langsmith = door(smithdb_only)
    assert langsmith.refresh_info().version == ""
    assert langsmith.backend() is QueryBackend.V2_ONLY


def test_a_burst_worker_with_nothing_to_do_leaves_while_info_fails(redis_server: RedisServer,
                                                                   smithdb_only: StandIn) -> None:
    smithdb_only.fail_info(1_000_000)
    stack = Pipeline(redis_server, smithdb_only, db=DB, workers=0)
    worker = lswh("worker", "--burst", env=stack.env, name="worker-burst")
    try:
        assert worker.popen.wait(timeout=60) == 0, worker.output()  # not waiting forever for /info
    finally:
        worker.stop()
        stack.stop()
