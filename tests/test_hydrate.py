"""Hydration: an inline value is used when present, a presigned URL only when well formed, and a
field only the API has fails when the API has nothing (workers/fetch/hydrate.py's pure parts, called
directly); and the order inline -> presigned object -> API, seen in the example a slice writes
on a worker runtime against the stand-in's API and object store."""

import httpx

from tests.support.faults import injected
from tests.support.stack import StandIn, fresh_run, s3_object, s3_urls
from workers.actions.dataset_writer import WRITTEN
from workers.errors import RunError
from workers.fetch.hydrate import Hydrated, inline, presigned_url, settle_from_api
from workers.flow.slices import process_slice
from workers.runtime import Runtime

URL = "https://s3.example/obj?X-Amz-Signature=abc"


def test_inline_value_only_when_it_is_an_object() -> None:
    assert inline({"outputs": {"a": 1}}, "outputs") == {"a": 1}
    assert inline({"outputs": None}, "outputs") is None
    assert inline({"outputs": "text"}, "outputs") is None


def test_presigned_url_is_read_from_root_only_when_well_formed() -> None:
    assert presigned_url({"outputs_s3_urls": {"ROOT": {"presigned_url": URL}}}, "outputs_s3_urls") == URL
    assert presigned_url({"outputs_s3_urls": {"ROOT": {"presigned_url": ""}}}, "outputs_s3_urls") is None
    assert presigned_url({"outputs_s3_urls": {"other": {"presigned_url": URL}}}, "outputs_s3_urls") is None
    assert presigned_url({}, "outputs_s3_urls") is None


def test_a_field_only_the_api_has_fails_for_good_when_the_api_returns_nothing() -> None:
    item = Hydrated(run={"id": "r1"}, from_api={"outputs"})
    settle_from_api(item, None)
    assert item.error is not None and not item.error.transient
    assert "outputs" in item.error.reason


def test_the_apis_refusal_becomes_the_runs_error() -> None:
    refusal = RunError("reading the run: 503", transient=True)
    item = Hydrated(run={"id": "r1"}, from_api={"inputs"})
    settle_from_api(item, refusal)
    assert item.error is refusal


def test_nothing_to_settle_when_no_field_needs_the_api() -> None:
    item = Hydrated(run={"id": "r1"}, values={"outputs": {"a": 1}})
    settle_from_api(item, None)
    assert item.error is None and item.values == {"outputs": {"a": 1}}


# --- the order, seen in the example written ---------------------------------------------------------


def _inputs_written(runtime: Runtime, standin: StandIn, runs: list[dict[str, object]]) -> dict[str, object]:
    outcomes, deferred = runtime.run(process_slice(runtime, runs, None))
    assert deferred == [] and outcomes == {run["id"]: WRITTEN for run in runs}, outcomes
    examples = standin.examples_by_run([str(run["id"]) for run in runs], runtime.settings.dataset)
    return {run_id: found[0]["inputs"] for run_id, found in examples.items()}


def test_inline_values_win_and_the_object_is_not_fetched(runtime: Runtime, standin: StandIn) -> None:
    url, path = s3_object(standin, {"from": "s3"})
    runs = [fresh_run(inputs=value, inputs_s3_urls=s3_urls(url), outputs={"a": 1})
            for value in ({"from": "inline"}, {})]
    standin.add_runs([{**run, "inputs": {"from": "api"}} for run in runs])
    # Fetched, the object would answer 503 and fail the runs for now; the block fetches it once
    # itself at the end, so the fault is spent whatever the worker did.
    with injected(standin, f"GET {path}", times=1, status=503):
        written = _inputs_written(runtime, standin, runs)
        httpx.get(url, timeout=10)
    assert written == {runs[0]["id"]: {"from": "inline"}, runs[1]["id"]: {}}  # {} is a value too


def test_a_usable_presigned_url_is_fetched_before_the_api_is_asked(runtime: Runtime, standin: StandIn) -> None:
    url, _ = s3_object(standin, {"from": "s3"})
    run = fresh_run(inputs_s3_urls=s3_urls(url), outputs={"a": 1})
    standin.add_runs([{**run, "inputs": {"from": "api"}}])
    assert _inputs_written(runtime, standin, [run]) == {run["id"]: {"from": "s3"}}


def test_without_a_usable_url_the_field_is_read_from_the_api(runtime: Runtime, standin: StandIn) -> None:
    expired, _ = s3_object(standin, {"from": "s3"}, expires_in=0)  # 403
    gone, path = s3_object(standin, {"from": "s3"})
    standin.admin("DELETE", path.replace("/s3/lswh-standin/", "s3/", 1))  # 404
    allowed, _ = s3_object(standin, {"from": "s3"})
    disallowed = allowed.replace("127.0.0.1", "localhost", 1)  # not on the allow-list exactly
    runs = [fresh_run(inputs_s3_urls=s3_urls(url), outputs={"a": 1}) for url in (expired, gone, disallowed)]
    runs.append(fresh_run(outputs={"a": 1}))  # no URL at all
    standin.add_runs([{**run, "inputs": {"from": "api"}} for run in runs])
    assert _inputs_written(runtime, standin, runs) == {run["id"]: {"from": "api"} for run in runs}
