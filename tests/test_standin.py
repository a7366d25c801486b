"""The LangSmith stand-in, served by uvicorn and driven by the real `langsmith` SDK."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langsmith import Client
from langsmith.utils import (
    LangSmithAuthError,
    LangSmithConflictError,
    LangSmithError,
    LangSmithNotFoundError,
    LangSmithRetry,
)

from lswh_standin import DEFAULT_API_KEY
from tests.support.procs import free_port, python_module, wait_http

# No deprecated SDK call here: LangSmith removes them (issue 8).
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

FIXTURE_RUN_ID = "6ab80f10-d79c-4fa2-b441-922ed6feb630"
# Without the multipart flag SDK 0.15 falls back to the JSON endpoints (/examples/bulk).
JSON_ENDPOINTS_INFO: dict[str, Any] = {"instance_flags": {}}


@pytest.fixture(scope="module")
def standin_url() -> Iterator[str]:
    port = free_port()
    proc = python_module(
        "lswh_standin", "--port", str(port), "--preload-fixture", name="standin"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/info", proc)
        yield url
    finally:
        proc.stop()


@pytest.fixture
def admin(standin_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=standin_url, timeout=10) as http:
        http.post("/_admin/reset").raise_for_status()
        yield http


def sdk(url: str, *, api_key: str = DEFAULT_API_KEY, **kwargs: Any) -> Client:
    return Client(api_url=url, api_key=api_key, auto_batch_tracing=False, **kwargs)


def example(dataset_id: Any, n: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "inputs": {"q": f"question {n}"},
        "reference_outputs": {"a": f"answer {n}"},
        "metadata": {"n": n},
        "source_run_id": str(uuid.uuid4()),
    }


def test_info_needs_no_key_and_advertises_multipart_examples(standin_url: str) -> None:
    info = sdk(standin_url, api_key="not-a-key").info
    assert info.instance_flags is not None
    assert info.instance_flags["dataset_examples_multipart_enabled"] is True


def test_wrong_api_key_is_401(standin_url: str, admin: httpx.Client) -> None:
    with pytest.raises(LangSmithAuthError):
        list(sdk(standin_url, api_key="lsv2-wrong").list_datasets(limit=1))


def test_any_key_with_the_standin_prefix_is_accepted(standin_url: str, admin: httpx.Client) -> None:
    assert list(sdk(standin_url, api_key=f"lsv2-standin-{uuid.uuid4()}").list_datasets(limit=1)) == []


def test_api_routes_need_a_key(standin_url: str, admin: httpx.Client) -> None:
    for method, path in [("GET", "/datasets"), ("GET", f"/runs/{FIXTURE_RUN_ID}"), ("GET", "/feedback"),
                         ("POST", "/api/v2/runs/query"), ("GET", "/api/v2/runs/rules")]:
        assert admin.request(method, path).status_code == 401, path
        assert admin.request(method, path, headers={"x-api-key": "lsv2-pt-real-looking"}).status_code == 401


def read_run(url: str, run_id: Any) -> dict[str, Any]:
    """`GET /runs/{id}` through the SDK's generic request call (`read_run` is deprecated)."""
    return dict(sdk(url).request_with_retries("GET", f"/runs/{run_id}").json())


def test_create_dataset_then_read_by_name_and_id(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url)
    created = client.create_dataset("webhook-examples", description="from runs")
    assert client.read_dataset(dataset_name="webhook-examples").id == created.id
    assert client.read_dataset(dataset_id=created.id).description == "from runs"
    assert [d.name for d in client.list_datasets(limit=1)] == ["webhook-examples"]


def test_read_unknown_dataset_is_not_found(standin_url: str, admin: httpx.Client) -> None:
    with pytest.raises(LangSmithNotFoundError):
        sdk(standin_url).read_dataset(dataset_name="no-such-dataset")


def test_create_dataset_with_existing_name_is_409(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url)
    client.create_dataset("twice")
    with pytest.raises(LangSmithConflictError):
        client.create_dataset("twice")


def test_create_examples_then_list_by_ids(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url)
    dataset = client.create_dataset("listing")
    specs = [example(dataset.id, n) for n in range(3)]
    response = client.create_examples(dataset_id=dataset.id, examples=specs)
    assert sorted(response["example_ids"]) == sorted(s["id"] for s in specs)

    wanted = [specs[0]["id"], specs[2]["id"]]
    found = {str(e.id): e for e in client.list_examples(dataset_id=dataset.id, example_ids=wanted)}
    assert sorted(found) == sorted(wanted)
    first = found[specs[0]["id"]]
    assert (first.inputs, first.outputs, first.metadata) == (
        {"q": "question 0"}, {"a": "answer 0"}, {"n": 0, "dataset_split": ["base"]}
    )
    assert str(first.source_run_id) == specs[0]["source_run_id"]
    assert first.dataset_id == dataset.id
    assert (
        admin.get("/_admin/stats").json()["requests"]["POST /v1/platform/datasets/{dataset_id}/examples"] == 1
    )


def test_create_examples_through_json_bulk_endpoint(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url, info=JSON_ENDPOINTS_INFO)
    dataset = client.create_dataset("json-bulk")
    specs = [example(dataset.id, n) for n in range(2)]
    client.create_examples(dataset_id=dataset.id, examples=specs)
    stored = admin.get("/_admin/examples", params={"dataset": "json-bulk"}).json()
    assert sorted(e["id"] for e in stored) == sorted(s["id"] for s in specs)
    assert admin.get("/_admin/stats").json()["requests"]["POST /examples/bulk"] == 1


def test_bulk_create_with_existing_id_is_refused_whole_with_409(
    standin_url: str, admin: httpx.Client
) -> None:
    client = sdk(standin_url)
    dataset = client.create_dataset("conflicts")
    existing = example(dataset.id, 0)
    client.create_examples(dataset_id=dataset.id, examples=[existing])

    batch = [example(dataset.id, 1), existing, example(dataset.id, 2)]
    with pytest.raises(LangSmithConflictError):
        client.create_examples(dataset_id=dataset.id, examples=batch)
    with pytest.raises(LangSmithConflictError):
        sdk(standin_url, info=JSON_ENDPOINTS_INFO).create_examples(dataset_id=dataset.id, examples=batch)

    stored = admin.get("/_admin/examples", params={"dataset": "conflicts"}).json()
    assert [e["id"] for e in stored] == [existing["id"]]


def test_create_single_example_with_existing_id_is_409(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url, info=JSON_ENDPOINTS_INFO)
    dataset = client.create_dataset("single")
    example_id = uuid.uuid4()
    client.create_example(inputs={"q": 1}, dataset_id=dataset.id, example_id=example_id)
    with pytest.raises(LangSmithConflictError):
        client.create_example(inputs={"q": 2}, dataset_id=dataset.id, example_id=example_id)
    assert client.read_example(example_id).inputs == {"q": 1}


def test_update_examples_changes_outputs(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url)
    dataset = client.create_dataset("updates")
    spec = example(dataset.id, 0)
    client.create_examples(dataset_id=dataset.id, examples=[spec])

    client.update_examples(
        dataset_id=dataset.id,
        updates=[
            {
                "id": spec["id"],
                "inputs": {"q": "question 0"},
                "outputs": {"a": "corrected"},
                "metadata": {"n": 1},
            },
        ],
    )
    updated = next(client.list_examples(dataset_id=dataset.id, example_ids=[spec["id"]]))
    # metadata is replaced whole, the base split with it
    assert (updated.outputs, updated.metadata) == ({"a": "corrected"}, {"n": 1})

    sdk(standin_url, info=JSON_ENDPOINTS_INFO).update_examples(
        dataset_id=dataset.id, updates=[{"id": spec["id"], "outputs": {"a": "again"}}]
    )
    stored = admin.get("/_admin/examples", params={"dataset": "updates"}).json()
    assert [(e["outputs"], e["metadata"]) for e in stored] == [({"a": "again"}, {"n": 1})]


def test_update_of_unknown_example_is_not_found(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url)
    dataset = client.create_dataset("update-unknown")
    with pytest.raises(LangSmithNotFoundError):
        client.update_examples(
            dataset_id=dataset.id, updates=[{"id": str(uuid.uuid4()), "outputs": {"a": 1}}]
        )


def test_list_examples_pages_through_a_large_dataset(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url)
    dataset = client.create_dataset("paging")
    specs = [example(dataset.id, n) for n in range(230)]
    client.create_examples(dataset_id=dataset.id, examples=specs)
    assert len({e.id for e in client.list_examples(dataset_id=dataset.id)}) == 230


def test_list_feedback_pages_through_all_of_many_runs(standin_url: str, admin: httpx.Client) -> None:
    run_ids = [str(uuid.uuid4()) for _ in range(50)]
    other_run = str(uuid.uuid4())
    items = [
        {"run_id": run_ids[n % 50], "key": "correctness", "score": n % 2, "correction": {"output": n}}
        for n in range(250)
    ]
    admin.post("/_admin/feedback", json=[*items, {"run_id": other_run, "key": "noise"}]).raise_for_status()

    got = list(sdk(standin_url).list_feedback(run_ids=run_ids))
    assert len(got) == 250
    assert {str(f.run_id) for f in got} == set(run_ids)
    assert all(f.created_at is not None and f.modified_at is not None for f in got)
    assert admin.get("/_admin/stats").json()["requests"]["GET /feedback"] == 3


def test_preloaded_fixture_run_is_readable(standin_url: str, admin: httpx.Client) -> None:
    run = read_run(standin_url, FIXTURE_RUN_ID)
    assert run["name"] == "Search" and run["run_type"] == "tool"
    assert set(run["inputs"]) == {"query"}
    assert run["outputs"] is not None and set(run["outputs"]) == {"output"}


def test_preloaded_run_carries_its_inputs_and_outputs(standin_url: str, admin: httpx.Client) -> None:
    run_id = str(uuid.uuid4())
    admin.post(
        "/_admin/runs",
        json=[{"id": run_id, "name": "agent", "inputs": {"q": "hi"}, "outputs": {"output": "hello"}}],
    ).raise_for_status()
    run = read_run(standin_url, run_id)
    assert (run["inputs"], run["outputs"], run["trace_id"]) == ({"q": "hi"}, {"output": "hello"}, run_id)


def test_read_run_unknown_is_not_found(standin_url: str, admin: httpx.Client) -> None:
    with pytest.raises(LangSmithNotFoundError):
        read_run(standin_url, uuid.uuid4())


def presign(admin: httpx.Client, **options: Any) -> dict[str, Any]:
    response = admin.post("/_admin/s3", json={"body": {"question": "hi"}, **options})
    response.raise_for_status()
    return dict(response.json())


def test_presigned_url_serves_the_json_object(admin: httpx.Client) -> None:
    made = presign(admin)
    assert made["s3_url"].startswith("s3://")
    response = httpx.get(made["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"question": "hi"}


def test_presigned_url_expired_is_403(admin: httpx.Client) -> None:
    response = httpx.get(presign(admin, expires_in=0)["url"])
    assert response.status_code == 403
    assert "expired" in response.text


def test_presigned_bad_signature_is_403(admin: httpx.Client) -> None:
    url = httpx.URL(presign(admin)["url"])
    assert httpx.get(url.copy_set_param("X-Amz-Signature", "0" * 64)).status_code == 403
    assert httpx.get(url.copy_remove_param("X-Amz-Signature")).status_code == 403


def test_presigned_url_of_deleted_object_is_404(admin: httpx.Client) -> None:
    made = presign(admin)
    admin.delete(f"/_admin/s3/{made['key']}").raise_for_status()
    assert httpx.get(made["url"]).status_code == 404


def test_presigned_url_can_redirect_and_pad(admin: httpx.Client) -> None:
    redirected = httpx.get(presign(admin, redirect_to="http://169.254.169.254/latest/")["url"])
    assert (redirected.status_code, redirected.headers["location"]) == (302, "http://169.254.169.254/latest/")
    padded = httpx.get(presign(admin, size_bytes=50_000)["url"])
    assert len(padded.content) == 50_000 and padded.json() == {"question": "hi"}


def test_fault_injection_503_then_recovers(standin_url: str, admin: httpx.Client) -> None:
    admin.post("/_admin/faults", json={"route": "GET /runs", "status": 503, "times": 1}).raise_for_status()
    # The SDK's urllib3 retry (3 retries on 408/425/429/5xx) rides over one 503.
    assert read_run(standin_url, FIXTURE_RUN_ID)["name"] == "Search"
    assert admin.get("/_admin/stats").json()["requests"]["GET /runs/{run_id}"] == 2
    assert admin.get("/_admin/faults").json()["pending"] == []


def test_fault_answers_its_status_and_retry_after_the_given_times(admin: httpx.Client) -> None:
    admin.post("/_admin/faults", json={"route": "* /runs", "status": 429, "times": 2, "retry_after": 7})
    url = f"/runs/{FIXTURE_RUN_ID}"
    headers = {"x-api-key": DEFAULT_API_KEY}
    first, second, third = (admin.get(url, headers=headers) for _ in range(3))
    assert (first.status_code, first.headers["retry-after"]) == (429, "7")
    assert second.status_code == 429
    assert third.status_code == 200


def test_faults_past_the_sdk_retries_surface_as_errors(standin_url: str, admin: httpx.Client) -> None:
    admin.post("/_admin/faults", json={"route": "GET /feedback", "status": 503, "times": 2})
    one_retry = LangSmithRetry(
        total=1, status_forcelist=[503], backoff_factor=0, raise_on_status=False, allowed_methods=None
    )
    with pytest.raises(LangSmithError, match="503"):
        list(sdk(standin_url, retry_config=one_retry).list_feedback(run_ids=[str(uuid.uuid4())]))
    assert admin.get("/_admin/stats").json()["requests"]["GET /feedback"] == 2


def test_reset_clears_examples_and_keeps_preloaded_runs(standin_url: str, admin: httpx.Client) -> None:
    client = sdk(standin_url)
    client.create_dataset("gone-after-reset")
    admin.post("/_admin/reset").raise_for_status()
    assert admin.get("/_admin/datasets").json() == []
    assert admin.get("/_admin/stats").json() == {
        "total": 0, "requests": {}, "rate_limited": {}, "rate_limited_total": 0
    }
    assert read_run(standin_url, FIXTURE_RUN_ID)["name"] == "Search"


def test_latency_slows_api_requests_but_not_admin(standin_url: str, admin: httpx.Client) -> None:
    admin.post("/_admin/latency", json={"ms": 300}).raise_for_status()
    started = time.monotonic()
    admin.get("/_admin/stats")
    admin_took = time.monotonic() - started
    started = time.monotonic()
    read_run(standin_url, FIXTURE_RUN_ID)
    assert time.monotonic() - started >= 0.3 > admin_took
