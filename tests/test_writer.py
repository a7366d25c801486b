"""workers/actions/dataset_writer.py called directly against the LangSmith stand-in (real SDK, real Redis budget):
create the new, update the changed keeping stored metadata, leave the identical alone."""

import uuid
from typing import Any

from tests.support.faults import injected
from tests.support.stack import StandIn
from workers.actions.dataset_writer import UNCHANGED, UPDATED, WRITTEN, Outcomes, Writer, resolve_dataset
from workers.errors import RunError
from workers.runtime import Runtime


def _example(run_id: str, outputs: Any, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, run_id)), "source_run_id": run_id,
            "inputs": {"q": "question"}, "outputs": outputs, "metadata": metadata or {"source": "test"}}


def test_writer_creates_new_updates_changed_and_leaves_identical(runtime: Runtime, standin: StandIn) -> None:
    name = f"writer-{uuid.uuid4()}"
    dataset_id = runtime.run(resolve_dataset(runtime, name))
    writer = Writer(runtime, dataset_id)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    first = runtime.run(writer.write([_example(a, {"answer": 1}), _example(b, {"answer": 2})]))
    assert first == {a: WRITTEN, b: WRITTEN}
    again = runtime.run(writer.write([_example(a, {"answer": 1}), _example(b, {"answer": 3})]))
    assert again == {a: UNCHANGED, b: UPDATED}
    stored = standin.examples_by_run([a, b])
    assert len(stored[a]) == 1 and len(stored[b]) == 1
    assert stored[a][0]["outputs"] == {"answer": 1}
    assert stored[b][0]["outputs"] == {"answer": 3}
    # LangSmith replaces metadata whole on update: the stored keys (the split) must survive.
    assert stored[b][0]["metadata"]["source"] == "test"
    assert "dataset_split" in stored[b][0]["metadata"]


def test_a_409_means_someone_was_first_not_a_failure(runtime: Runtime, standin: StandIn) -> None:
    name = f"writer-{uuid.uuid4()}"
    dataset_id = runtime.run(resolve_dataset(runtime, name))
    writer = Writer(runtime, dataset_id)
    run_id = str(uuid.uuid4())
    standin.race(per_list=1)  # another writer creates the id between our listing and our create
    outcomes = runtime.run(writer.write([_example(run_id, {"answer": 1})]))
    assert outcomes[run_id] in (UNCHANGED, UPDATED), outcomes
    assert standin.pending_races() == []
    stored = [e for e in standin.examples() if e["dataset_id"] == dataset_id]
    assert len(stored) == 1 and stored[0]["outputs"] == {"answer": 1}, stored


def _write_refused(runtime: Runtime, standin: StandIn, runs: int, refusals: int) -> tuple[list[str], Outcomes]:
    """Write `runs` new examples while LangSmith refuses the dataset's next `refusals` example
    writes with a 422 (no one's transient trouble)."""
    dataset_id = runtime.run(resolve_dataset(runtime, f"writer-{uuid.uuid4()}"))
    run_ids = [str(uuid.uuid4()) for _ in range(runs)]
    with injected(standin, f"POST /v1/platform/datasets/{dataset_id}/examples", times=refusals, status=422):
        examples = [_example(run, {"answer": n}) for n, run in enumerate(run_ids)]
        return run_ids, runtime.run(Writer(runtime, dataset_id).write(examples))


def test_a_refused_batch_is_split_so_the_rest_still_land(runtime: Runtime, standin: StandIn) -> None:
    runs, outcomes = _write_refused(runtime, standin, runs=4, refusals=1)  # the whole batch, once: halves go again
    assert outcomes == dict.fromkeys(runs, WRITTEN)
    assert sorted(standin.examples_by_run(runs)) == sorted(runs)


def test_an_example_refused_alone_fails_alone(runtime: Runtime, standin: StandIn) -> None:
    # Refused as a pair, then one of the two refused again on its own: only that one fails, for good.
    runs, outcomes = _write_refused(runtime, standin, runs=2, refusals=2)
    failed = [run for run, outcome in outcomes.items() if isinstance(outcome, RunError)]
    assert len(failed) == 1 and sorted(outcomes) == sorted(runs), outcomes
    assert not outcomes[failed[0]].transient  # type: ignore[union-attr]
    written = [run for run in runs if run not in failed]
    assert outcomes[written[0]] == WRITTEN
    assert list(standin.examples_by_run(runs)) == written
