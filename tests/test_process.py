"""workers/flow/slices.py's process_slice called directly on a worker runtime (real Redis, the real SDK
talking HTTP to the LangSmith stand-in, its object store): an outcome per run, the runs past the
slice's byte bound handed back, the (action, run) pairs done recorded and not done again."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lswh_core import contract
from tests.support.faults import injected
from tests.support.procs import RedisServer
from tests.support.stack import StandIn, fresh_run, worker_runtime
from workers.actions.dataset_writer import UPDATED, WRITTEN, resolve_dataset
from workers.errors import RunError
from workers.flow.slices import SLICE_BYTES, Relay, process_slice
from workers.runtime import Runtime

MIB = 1024 * 1024


def inline(n: int, answer: Any = "a") -> list[dict[str, Any]]:
    return [fresh_run(inputs={"q": f"question {i}"}, outputs={"answer": answer}) for i in range(n)]


def stored(standin: StandIn, runs: list[dict[str, Any]], dataset: str) -> dict[str, list[dict[str, Any]]]:
    return standin.examples_by_run([str(run["id"]) for run in runs], dataset)


def test_each_run_gets_its_outcome_and_a_run_found_nowhere_fails_alone(runtime: Runtime, standin: StandIn) -> None:
    runs = inline(3)
    nowhere = fresh_run()  # no values inline, no object, unknown to LangSmith
    outcomes, deferred = runtime.run(process_slice(runtime, [*runs, nowhere], None))
    assert deferred == []
    assert {run_id: outcomes[run_id] for run_id in (r["id"] for r in runs)} == dict.fromkeys(
        (r["id"] for r in runs), WRITTEN)
    failed = outcomes[nowhere["id"]]
    assert isinstance(failed, RunError) and not failed.transient, failed
    examples = stored(standin, [*runs, nowhere], runtime.settings.dataset)
    assert sorted(examples) == sorted(r["id"] for r in runs)
    assert all(examples[r["id"]][0]["outputs"] == {"answer": "a"} for r in runs)


def test_runs_past_the_slice_byte_bound_are_handed_back_in_order(runtime: Runtime, standin: StandIn) -> None:
    # 1 MiB objects: objects are fetched only until the slice holds SLICE_BYTES (16 MiB), so of
    # 60 runs some start no fetch and wait for the next slice.
    url = standin.put_object({"q": "padded"}, size_bytes=MIB, expires_in=3600)
    runs = [fresh_run(inputs=None, outputs={"answer": i},
                      inputs_s3_urls={"ROOT": {"presigned_url": url, "s3_url": "s3://b/k"}}) for i in range(60)]
    outcomes, deferred = runtime.run(process_slice(runtime, runs, None))
    assert deferred, "no run was deferred"
    done_now = len(runs) - len(deferred)
    assert done_now * MIB >= SLICE_BYTES
    assert [r["id"] for r in deferred] == [r["id"] for r in runs[done_now:]]  # the tail, in order
    assert outcomes == dict.fromkeys((r["id"] for r in runs[:done_now]), WRITTEN)
    # The next slice takes the rest.
    rest, later = runtime.run(process_slice(runtime, deferred, None))
    assert later == [] and rest == dict.fromkeys((r["id"] for r in deferred), WRITTEN)
    assert len(stored(standin, runs, runtime.settings.dataset)) == len(runs)


def test_pairs_done_are_recorded_and_not_done_again(runtime: Runtime, standin: StandIn) -> None:
    delivery_id = uuid.uuid4().hex
    runs = inline(2, answer="first")
    first, _ = runtime.run(process_slice(runtime, runs, None, delivery_id=delivery_id))
    assert first == dict.fromkeys((r["id"] for r in runs), WRITTEN)
    assert runtime.redis.hlen(contract.actions_done_key(delivery_id)) == len(runs)
    # The same delivery again (a retried job) with what would now be an update: the recorded
    # outcome stands and nothing is written.
    changed = [{**run, "outputs": {"answer": "second"}} for run in runs]
    again, _ = runtime.run(process_slice(runtime, changed, None, delivery_id=delivery_id))
    assert again == first
    assert all(e[0]["outputs"] == {"answer": "first"} for e in stored(standin, runs, runtime.settings.dataset).values())
    # Another delivery of the same runs is not covered by that record: it updates.
    other, _ = runtime.run(process_slice(runtime, changed, None, delivery_id=uuid.uuid4().hex))
    assert other == dict.fromkeys((r["id"] for r in runs), UPDATED)


@pytest.fixture
def two_datasets(redis_server: RedisServer, standin: StandIn, monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> Iterator[tuple[Runtime, str, str, str]]:
    """A runtime whose rule has two dataset actions: (runtime, rule id, first dataset, second)."""
    rule_id, tag = str(uuid.uuid4()), uuid.uuid4().hex[:8]
    first, second = f"process-a-{tag}", f"process-b-{tag}"
    rules = tmp_path / "rules.toml"
    rules.write_text(textwrap.dedent(f'''
        [default]
        dataset = "{first}"

        [rules."{rule_id}"]
        dataset = "{first}"

        [[rules."{rule_id}".actions]]
        type = "dataset"

        [[rules."{rule_id}".actions]]
        type = "dataset"
        dataset = "{second}"
    '''))
    with worker_runtime(redis_server, standin, monkeypatch, LSWH_RULES_FILE=str(rules)) as runtime:
        yield runtime, rule_id, first, second


def test_an_action_that_failed_is_redone_alone(two_datasets: tuple[Runtime, str, str, str], standin: StandIn) -> None:
    runtime, rule_id, first, second = two_datasets
    delivery_id = uuid.uuid4().hex
    [run] = inline(1, answer="first")
    second_id = runtime.run(resolve_dataset(runtime, second))
    # LangSmith refuses the second dataset's write for good: the run fails, its first action is done.
    with injected(standin, f"POST /v1/platform/datasets/{second_id}/examples", times=1, status=422):
        outcomes, _ = runtime.run(process_slice(runtime, [run], rule_id, delivery_id=delivery_id))
    assert isinstance(outcomes[run["id"]], RunError), outcomes
    assert stored(standin, [run], first)[run["id"]][0]["outputs"] == {"answer": "first"}
    assert stored(standin, [run], second) == {}
    # The retry: only the failed action runs (the first dataset's example is not updated).
    retried, _ = runtime.run(process_slice(runtime, [{**run, "outputs": {"answer": "second"}}], rule_id,
                                           delivery_id=delivery_id))
    assert retried == {run["id"]: WRITTEN}
    assert stored(standin, [run], first)[run["id"]][0]["outputs"] == {"answer": "first"}
    assert stored(standin, [run], second)[run["id"]][0]["outputs"] == {"answer": "second"}


def test_a_slice_hands_off_to_the_next_before_it_is_done(runtime: Runtime, standin: StandIn) -> None:
    """`relay.started` resolves with the runs left for the next slice once the slice has started
    its last fetch, while its write is still in flight (held 1 s by LangSmith here); its claims
    wait for the previous slice's (`relay.after`)."""
    url = standin.put_object({"q": "padded"}, size_bytes=MIB, expires_in=3600)
    runs = [fresh_run(inputs=None, outputs={"answer": i},
                      inputs_s3_urls={"ROOT": {"presigned_url": url, "s3_url": "s3://b/k"}}) for i in range(60)]
    dataset_id = runtime.run(resolve_dataset(runtime, runtime.settings.dataset))

    async def slice_in_a_relay() -> tuple[list[Any], bool, bool, dict[str, Any], Any]:
        previous = Relay.following(None)
        relay = Relay.following(previous)
        task = asyncio.ensure_future(process_slice(runtime, runs, None, relay=relay))
        handed = await relay.started
        at_hand_off = task.done(), stored(standin, runs, runtime.settings.dataset)
        await asyncio.sleep(0.5)  # all fetched by now: it waits for the previous slice's claims
        claimed_early = relay.claimed.done()
        previous.claimed.set_result(None)
        return handed, at_hand_off[0], claimed_early, at_hand_off[1], await task

    with injected(standin, f"POST /v1/platform/datasets/{dataset_id}/examples", times=1, stall_seconds=1):
        handed, done_at_hand_off, claimed_early, stored_at_hand_off, (outcomes, deferred) = runtime.run(
            slice_in_a_relay())
    assert not done_at_hand_off and not claimed_early and stored_at_hand_off == {}
    assert deferred and handed == deferred  # 60 MiB of objects: past the byte bound, the tail is handed over
    assert outcomes == dict.fromkeys((r["id"] for r in runs[:len(runs) - len(deferred)]), WRITTEN)
    assert len(stored(standin, runs, runtime.settings.dataset)) == len(runs) - len(deferred)
