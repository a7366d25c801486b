"""The actions' pure parts: example ids and shapes, queue items, jsonl lines."""

from __future__ import annotations

from workers.actions.annotation_queue import queue_item
from workers.actions.dataset import examples, nth_example_id
from workers.actions.jsonl import jsonl_examples
from workers.build.examples import example_id

RUN = "6c1b9f4e-3c1d-4a2b-9e8f-0a1b2c3d4e5f"


def test_first_example_of_a_run_keeps_the_id_it_had_without_a_transform() -> None:
    assert nth_example_id("ds", RUN, 0) == example_id("ds", RUN)


def test_further_examples_of_a_run_get_distinct_stable_ids() -> None:
    ids = [nth_example_id("ds", RUN, i) for i in range(3)]
    assert len(set(ids)) == 3
    assert ids == [nth_example_id("ds", RUN, i) for i in range(3)]
    assert nth_example_id("other", RUN, 1) != ids[1]


def test_dataset_examples_carry_the_split_only_when_set() -> None:
    drafts = [{"inputs": {"q": 1}, "outputs": {"a": 1}, "metadata": {"m": 1}}, {"inputs": {"q": 2}}]
    with_split = examples("ds", RUN, drafts, "train")  # type: ignore[arg-type]
    assert [e["split"] for e in with_split] == ["train", "train"]
    assert with_split[1]["outputs"] is None and with_split[1]["metadata"] == {}
    assert all(e["source_run_id"] == RUN for e in with_split)
    assert "split" not in examples("ds", RUN, drafts, None)[0]  # type: ignore[arg-type]


def test_queue_item_locates_the_run_by_project_and_start_time_when_known() -> None:
    run = {"id": RUN, "session_id": "p-1", "start_time": "2024-04-05T01:28:54.734491", "inputs": {"big": "x"}}
    # A naive webhook time is UTC, sent with its offset (lswh_core/times.py).
    assert queue_item(run) == {"item_type": "RUN", "run_id": RUN, "project_id": "p-1",
                               "start_time": "2024-04-05T01:28:54.734491+00:00"}
    assert queue_item({"id": RUN}) == {"item_type": "RUN", "run_id": RUN}


def test_jsonl_lines_have_stable_ids_per_dataset_and_index() -> None:
    drafts = [{"inputs": {"q": 1}}, {"inputs": {"q": 2}, "outputs": {"a": 2}}]
    lines = jsonl_examples("ds", RUN, drafts, "test")
    assert [line["id"] for line in lines] == [line["id"] for line in jsonl_examples("ds", RUN, drafts, "test")]
    assert lines[0]["id"] != lines[1]["id"]
    assert lines[0]["id"] != jsonl_examples("other", RUN, drafts, "test")[0]["id"]
    assert [(line["run_id"], line["split"], line["outputs"]) for line in lines] == [(RUN, "test", None),
                                                                                   (RUN, "test", {"a": 2})]
