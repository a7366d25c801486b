"""Examples, feedback and rules on the stand-in, shaped as LangSmith shapes them, through the real SDK."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from langsmith import AsyncLangsmith, Client
from langsmith.utils import LangSmithConflictError, LangSmithError

from tests.support.stack import StandIn, fresh_key


def sdk(standin: StandIn) -> Client:
    return Client(api_url=standin.url, api_key=fresh_key(), auto_batch_tracing=False)


def spec(n: int, **fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "inputs": {"q": n}, "reference_outputs": {"a": n}, **fields}


def stored(standin: StandIn, example_id: str) -> dict[str, Any]:
    return next(e for e in standin.examples() if e["id"] == example_id)


# --- create and update ----------------------------------------------------------------------------


def test_multipart_create_answers_201_with_count_ids_and_as_of(fresh: StandIn) -> None:
    dataset = sdk(fresh).create_dataset(f"ds-{uuid.uuid4()}")
    ids = [str(uuid.uuid4()) for _ in range(2)]
    files = {}
    for n, example_id in enumerate(ids):
        files[example_id] = (None, json.dumps({"metadata": {"n": n}}), "application/json")
        files[f"{example_id}.inputs"] = (None, json.dumps({"q": n}), "application/json")
    answer = fresh.http.post(f"/v1/platform/datasets/{dataset.id}/examples", files=files,
                             headers={"x-api-key": fresh_key()})
    assert answer.status_code == 201
    body = answer.json()
    assert (body["count"], sorted(body["example_ids"])) == (2, sorted(ids))
    assert "as_of" in body


def test_sdk_create_goes_through_multipart_and_keeps_split_in_metadata(fresh: StandIn) -> None:
    client = sdk(fresh)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    train, plain = spec(0, split="train", metadata={"k": 1}), spec(1)
    client.create_examples(dataset_id=dataset.id, examples=[train, plain])
    assert fresh.stats()["requests"]["POST /v1/platform/datasets/{dataset_id}/examples"] == 1
    assert stored(fresh, train["id"])["metadata"] == {"k": 1, "dataset_split": ["train"]}
    assert stored(fresh, plain["id"])["metadata"] == {"dataset_split": ["base"]}
    in_train = list(client.list_examples(dataset_id=dataset.id, splits=["train"]))
    assert [str(e.id) for e in in_train] == [train["id"]]


def test_update_replaces_metadata_whole(fresh: StandIn) -> None:
    client = sdk(fresh)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    example = spec(0, split="test", metadata={"reviewer": "ana", "rule_id": "r"})
    client.create_examples(dataset_id=dataset.id, examples=[example])
    client.update_examples(dataset_id=dataset.id, updates=[{"id": example["id"], "metadata": {"rule_id": "r2"}}])
    assert stored(fresh, example["id"])["metadata"] == {"rule_id": "r2"}  # reviewer key and split gone


def test_update_without_metadata_keeps_it(fresh: StandIn) -> None:
    client = sdk(fresh)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    example = spec(0, metadata={"reviewer": "ana"})
    client.create_examples(dataset_id=dataset.id, examples=[example])
    client.update_examples(dataset_id=dataset.id, updates=[{"id": example["id"], "inputs": {"q": "new"}}])
    after = stored(fresh, example["id"])
    assert (after["inputs"], after["metadata"]) == ({"q": "new"}, {"reviewer": "ana", "dataset_split": ["base"]})


def test_update_of_an_example_in_another_dataset_is_409(fresh: StandIn) -> None:
    client = sdk(fresh)
    home, other = (client.create_dataset(f"ds-{uuid.uuid4()}") for _ in range(2))
    example = spec(0)
    client.create_examples(dataset_id=home.id, examples=[example])
    with pytest.raises(LangSmithConflictError):
        client.update_examples(dataset_id=other.id, updates=[{"id": example["id"], "inputs": {"q": "moved"}}])
    assert stored(fresh, example["id"])["inputs"] == {"q": 0}


# --- per-key metadata -----------------------------------------------------------------------------


def update_metadata(standin: StandIn, dataset_id: str, ids: list[str], operations: list[dict[str, Any]]) -> Any:
    """`client.datasets.examples.update_metadata` (the SDK's generated async client), raw, so the
    status shows; the client is closed on the loop (see test_standin_runs.on_a_loop)."""
    client = sdk(standin)

    async def call() -> Any:
        try:
            raw = await client.datasets.examples.with_raw_response.update_metadata(
                dataset_id, example_ids=ids, operations=operations  # type: ignore[arg-type]
            )
            return raw.http_response.status_code, await raw.parse()
        finally:
            await client.datasets._client.close()

    return asyncio.run(call())


def test_per_key_metadata_update_answers_207_and_keeps_other_keys(fresh: StandIn) -> None:
    client = sdk(fresh)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    example = spec(0, split="train", metadata={"reviewer": "ana", "feedback": {"old": 1}})
    client.create_examples(dataset_id=dataset.id, examples=[example])
    unknown = str(uuid.uuid4())
    status, answer = update_metadata(fresh, str(dataset.id), [example["id"], unknown], [
        {"key": "feedback", "operation": "SET", "value": {"correctness": 1}},
        {"key": "run_name", "operation": "SET", "value": "Search"},
        {"key": "dataset_split", "operation": "ARRAY_ADD", "values": ["golden"]},
    ])
    assert status == 207
    statuses = answer.statuses
    assert [(s.id, s.status) for s in statuses] == [(example["id"], "UPDATED"), (unknown, "NOT_FOUND")]
    assert stored(fresh, example["id"])["metadata"] == {
        "reviewer": "ana", "feedback": {"correctness": 1}, "run_name": "Search", "dataset_split": ["train", "golden"]
    }


def test_sdk_split_update_goes_through_the_metadata_endpoint(fresh: StandIn) -> None:
    client = sdk(fresh)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    example = spec(0)
    client.create_examples(dataset_id=dataset.id, examples=[example])
    client.update_dataset_splits(dataset_id=dataset.id, split_name="test", example_ids=[example["id"]])
    assert stored(fresh, example["id"])["metadata"]["dataset_split"] == ["base", "test"]
    assert fresh.stats()["requests"]["PATCH /v1/platform/datasets/{dataset_id}/examples/metadata"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"example_ids": [], "operations": [{"key": "k", "operation": "SET", "value": 1}]},
        {"example_ids": [str(uuid.uuid4())], "operations": []},
        {"example_ids": [str(uuid.uuid4())], "operations": [{"key": "k", "operation": "MERGE"}]},
        {"example_ids": [str(uuid.uuid4())], "operations": [{"key": "", "operation": "SET", "value": 1}]},
    ],
)
def test_per_key_metadata_update_refuses_bad_operations_with_422(fresh: StandIn, body: dict[str, Any]) -> None:
    dataset = sdk(fresh).create_dataset(f"ds-{uuid.uuid4()}")
    answer = fresh.http.patch(f"/api/v1/platform/datasets/{dataset.id}/examples/metadata", json=body,
                              headers={"x-api-key": fresh_key()})
    assert answer.status_code == 422


# --- races ----------------------------------------------------------------------------------------


def test_race_creates_the_given_example_right_after_the_listing(fresh: StandIn) -> None:
    client = sdk(fresh)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    mine = spec(0)
    fresh.race([{"id": mine["id"], "inputs": {"q": "theirs"}}])
    assert list(client.list_examples(dataset_id=dataset.id, example_ids=[mine["id"]])) == []
    with pytest.raises(LangSmithConflictError):
        client.create_examples(dataset_id=dataset.id, examples=[mine, spec(1)])
    assert [e["inputs"] for e in fresh.examples()] == [{"q": "theirs"}]
    assert fresh.pending_races() == []


def test_race_on_listed_ids_refuses_creates_round_after_round(fresh: StandIn) -> None:
    """A writer that lists, then creates what it did not find, meets a conflict each round while
    the race lasts (here one listed id is taken per round, three rounds)."""
    client = sdk(fresh)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    batch = [spec(n) for n in range(4)]
    fresh.race(times=3, per_list=1)
    conflicts = 0
    for _ in range(10):
        ids = [e["id"] for e in batch]
        found = {str(e.id) for e in client.list_examples(dataset_id=dataset.id, example_ids=ids)}
        missing = [e for e in batch if e["id"] not in found]
        if not missing:
            break
        try:
            client.create_examples(dataset_id=dataset.id, examples=missing)
        except LangSmithConflictError:
            conflicts += 1
    assert conflicts == 3
    assert len(fresh.examples()) == 4
    assert sum(e["inputs"] == {"raced": True} for e in fresh.examples()) == 3


def test_race_waits_for_a_listing_that_names_missing_ids(fresh: StandIn) -> None:
    client = sdk(fresh)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    fresh.race(times=1)
    list(client.list_examples(dataset_id=dataset.id))
    assert fresh.pending_races() == [{"mode": "listed", "times": 1, "per_list": None, "fired": 0}]


# --- feedback -------------------------------------------------------------------------------------


def test_feedback_listing_refuses_more_than_100_a_page(fresh: StandIn) -> None:
    headers = {"x-api-key": fresh_key()}
    assert fresh.http.get("/feedback", params={"limit": 101}, headers=headers).status_code == 422
    assert fresh.http.get("/feedback", params={"limit": 100}, headers=headers).status_code == 200


@pytest.mark.parametrize(("path", "param"), [("/feedback", "run"), ("/examples", "id"), ("/examples", "dataset")])
def test_listing_with_one_malformed_id_is_refused_whole_with_422(fresh: StandIn, path: str, param: str) -> None:
    params = [(param, str(uuid.uuid4())), (param, "not-a-run-id"), (param, str(uuid.uuid4()))]
    answer = fresh.http.get(path, params=params, headers={"x-api-key": fresh_key()})
    assert answer.status_code == 422
    assert "not-a-run-id" in answer.json()["detail"]


def test_evaluator_score_correction_is_stored_and_moves_modified_at(fresh: StandIn) -> None:
    run_id = str(uuid.uuid4())
    [feedback_id] = fresh.admin("POST", "feedback", [
        {"run_id": run_id, "key": "correctness", "score": 0, "modified_at": "2024-04-05T01:00:00+00:00"}
    ])["ids"]
    client = sdk(fresh)
    client.update_feedback(feedback_id, correction={"score": 1})
    [item] = list(client.list_feedback(run_ids=[run_id]))
    assert (item.score, item.correction) == (0, {"score": 1})
    assert item.modified_at is not None and item.modified_at.year > 2024


def test_admin_feedback_upsert_keeps_fields_and_takes_modified_at(fresh: StandIn) -> None:
    run_id = str(uuid.uuid4())
    [feedback_id] = fresh.admin("POST", "feedback", [{"run_id": run_id, "key": "k", "score": 1}])["ids"]
    fresh.add_feedback([{"id": feedback_id, "correction": "human", "modified_at": "2030-01-01T00:00:00+00:00"}])
    [item] = [f for f in fresh.feedback() if f["id"] == feedback_id]
    assert (item["key"], item["score"], item["correction"], item["modified_at"]) == (
        "k", 1, "human", "2030-01-01T00:00:00+00:00"
    )


# --- rules ----------------------------------------------------------------------------------------


def list_rules(standin: StandIn, **params: Any) -> list[Any]:
    """`evaluators.list_v2` on the SDK's generated client, following cursors."""

    async def collect() -> list[Any]:
        async with AsyncLangsmith(api_key=fresh_key(), base_url=standin.url, max_retries=0) as client:
            return [rule async for rule in client.evaluators.list_v2(**params)]

    return asyncio.run(collect())


def test_rules_list_v2_pages_and_filters_by_project(fresh: StandIn) -> None:
    project, dataset = str(uuid.uuid4()), str(uuid.uuid4())
    webhook = {"url": "https://pipeline.example/webhooks/langsmith?secret=s", "headers": {"X-Team": "a"}}
    mine = fresh.add_rules([
        {"project_id": project, "display_name": f"rule {n}", "filter": 'eq(run_type, "llm")', "webhooks": [webhook],
         "updated_at": f"2024-04-0{n + 1}T00:00:00+00:00"}
        for n in range(3)
    ])
    fresh.add_rules([{"dataset_id": dataset, "sampling_rate": 0.5, "is_enabled": False}])
    rules = list_rules(fresh, project_id=project, page_size=2)
    assert [r.id for r in rules] == mine[::-1]  # newest updated_at first
    assert rules[0].filter == 'eq(run_type, "llm")' and rules[0].webhooks is not None
    assert (rules[0].webhooks[0].url, rules[0].webhooks[0].headers) == (webhook["url"], webhook["headers"])
    assert fresh.stats()["requests"]["GET /api/v2/runs/rules"] == 2
    [by_dataset] = list_rules(fresh, type="DATASET")
    assert (by_dataset.dataset_id, by_dataset.sampling_rate, by_dataset.is_enabled) == (dataset, 0.5, False)


def test_rule_without_project_or_dataset_is_refused(fresh: StandIn) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        fresh.add_rules([{"display_name": "nowhere"}])


def test_rules_page_size_over_100_is_422(fresh: StandIn) -> None:
    answer = fresh.http.get("/api/v2/runs/rules", params={"page_size": 101}, headers={"x-api-key": fresh_key()})
    assert answer.status_code == 422


def test_errors_name_the_problem(fresh: StandIn) -> None:
    with pytest.raises(LangSmithError, match="422"):
        sdk(fresh).request_with_retries("GET", "/feedback", params={"limit": 500})


# --- annotation queues ----------------------------------------------------------------------------


def add_to_queue(standin: StandIn, queue_id: str, items: list[dict[str, Any]]) -> Any:
    client = sdk(standin)

    async def call() -> Any:
        try:
            added = await client.annotation_queues.items.create(queue_id, items=items)  # type: ignore[arg-type]
            listed = [i async for i in client.annotation_queues.items.list(queue_id, status="needs_my_review",
                                                                             page_size=1)]
            return added, listed
        finally:
            await client.annotation_queues._client.close()

    return asyncio.run(call())


def test_runs_added_to_an_annotation_queue_are_read_back(fresh: StandIn) -> None:
    queue_id = fresh.add_queue("review")
    project = str(uuid.uuid4())
    runs = [str(uuid.uuid4()) for _ in range(2)]
    added, listed = add_to_queue(fresh, queue_id, [{"run_id": r, "project_id": project} for r in runs])
    assert [i.run_id for i in added.items] == runs
    assert [i.run_id for i in listed] == runs  # two pages of one
    assert [(i["run_id"], i["project_id"], i["item_type"]) for i in fresh.queue_items(queue_id)] == [
        (r, project, "RUN") for r in runs
    ]


def test_annotation_queues_are_found_by_exact_name_through_the_sdk(fresh: StandIn) -> None:
    name = f"review-{uuid.uuid4().hex[:8]}"  # queues outlive a test on this stand-in
    wanted = fresh.add_queue(name)
    fresh.add_queue(f"{name}-2")
    client = sdk(fresh)

    async def call(name: str) -> list[Any]:
        try:
            return [q async for q in client.annotation_queues.retrieve_annotation_queues(name=name, limit=100)]
        finally:
            await client.annotation_queues._client.close()

    assert [(q.id, q.name) for q in asyncio.run(call(name))] == [(wanted, name)]
    client = sdk(fresh)
    assert asyncio.run(call("nobody")) == []


def test_queue_item_without_run_id_or_on_an_unknown_queue_is_refused(fresh: StandIn) -> None:
    queue_id = fresh.add_queue("review")
    headers = {"x-api-key": fresh_key()}
    path = f"/api/v1/platform/annotation-queues/{queue_id}/items"
    assert fresh.http.post(path, json={"items": [{"item_type": "RUN"}]}, headers=headers).status_code == 422
    unknown = f"/api/v1/platform/annotation-queues/{uuid.uuid4()}/items"
    assert fresh.http.post(unknown, json={"items": [{"run_id": str(uuid.uuid4())}]}, headers=headers).status_code == 404
    assert fresh.queue_items(queue_id) == []


def test_sdk_pointed_at_a_self_hosted_api_v1_endpoint_works_unchanged(fresh: StandIn) -> None:
    """Self-hosted `LANGSMITH_ENDPOINT`s end in `/api/v1`; the SDK then drops its own `/v1` from
    platform paths, and the generated client strips the suffix for `/api/v2`."""
    client = Client(api_url=f"{fresh.url}/api/v1", api_key=fresh_key(), auto_batch_tracing=False)
    dataset = client.create_dataset(f"ds-{uuid.uuid4()}")
    example = spec(0)
    client.create_examples(dataset_id=dataset.id, examples=[example])
    assert [str(e.id) for e in client.list_examples(dataset_id=dataset.id)] == [example["id"]]
    requests = fresh.stats()["requests"]
    assert requests["POST /v1/platform/datasets/{dataset_id}/examples"] == 1
    assert requests["POST /datasets"] == 1
