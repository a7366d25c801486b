import uuid

from workers.actions.dataset import examples
from workers.build.examples import differs, example_id, example_metadata


def test_example_id_is_deterministic_per_dataset_and_run() -> None:
    assert example_id("d1", "r1") == example_id("d1", "r1")
    assert example_id("d1", "r1") != example_id("d2", "r1")
    assert example_id("d1", "r1") != example_id("d1", "r2")
    assert uuid.UUID(example_id("d1", "r1")).version == 5


def test_example_carries_metadata_and_source_run() -> None:
    run = {"id": "r1", "trace_id": "t1", "name": "Search"}
    [example] = examples("d", "r1", [{"inputs": {"q": 1}, "outputs": None,
                                      "metadata": example_metadata(run, "rule", {"k": 1})}], None)
    assert example["source_run_id"] == "r1"
    assert example["metadata"] == {"rule_id": "rule", "run_id": "r1", "trace_id": "t1", "run_name": "Search",
                                   "feedback": {"k": 1}}
    assert example["outputs"] is None


def test_identical_example_is_not_different_despite_extra_stored_metadata() -> None:
    [wanted] = examples("d", "r", [{"inputs": {"q": 1}, "outputs": {"a": 2},
                                    "metadata": example_metadata({"id": "r"}, None, {})}], None)
    stored = {**wanted, "metadata": {**wanted["metadata"], "dataset_split": ["base"]}}
    assert not differs(stored, wanted)


def test_new_correction_makes_it_different() -> None:
    [wanted] = examples("d", "r", [{"inputs": {"q": 1}, "outputs": {"a": 3},
                                    "metadata": example_metadata({"id": "r"}, None, {})}], None)
    stored = {**wanted, "outputs": {"a": 2}}
    assert differs(stored, wanted)
