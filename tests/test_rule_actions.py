"""A rules file (LSWH_RULES_FILE) end to end: real workers, the stand-in over HTTP, each option,
action and built-in transform as a user's deployment runs it."""

from __future__ import annotations

import datetime as dt
import json
import re
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.registry import FailedJobRegistry

from lswh_core import contract
from tests.support.faults import injected
from tests.support.procs import ROOT, RedisServer, wait_until
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run
from workers.actions.jsonl import read_jsonl
from workers.build.examples import example_id
from workers.build.splits import assign_split

RULES_DOC = ROOT / "docs" / "rules.md"
FIXTURES = Path(__file__).parent / "fixtures" / "langchain_messages"
T0 = dt.datetime(2024, 4, 5, 1, 0, tzinfo=dt.UTC)

# The user's own transforms, in a directory on PYTHONPATH as docs/rules.md says to deploy them.
USER_TRANSFORMS = '''
import time


def picky(run):
    if run["inputs"].get("explode"):
        # a transform that quotes data and a key in its error: the failed job must not show the key
        raise ValueError("cannot label ticket; called with api_key=sk-live-0123456789abcdef")
    if run["inputs"].get("skip"):
        return None
    return {"inputs": {**run["inputs"], "seen_by": "picky"}, "metadata": {**run["metadata"], "picky": True}}


def two(run):
    """One run, two examples: the question, and the question shouted; no question, no example."""
    question = run["inputs"].get("q")
    if question is None:
        return None
    return [{"inputs": {"q": question}}, {"inputs": {"q": question.upper()}}]


def slow(run):
    time.sleep(0.02)  # long enough that two workers' jobs overlap
    return {"inputs": run["inputs"]}
'''


def at(minutes: int) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat()


def worked_example_toml() -> str:
    """The worked example of docs/rules.md, verbatim: the test runs what the docs show."""
    text = RULES_DOC.read_text()
    section = text[text.index("### Worked example"):]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


WORKED_RULE = "3f1c6a52-7d0e-4b8a-9c41-2e5d8f7a6b10"
RULES = {name: str(uuid.uuid4()) for name in
         ("filters", "builtins", "user", "split", "queue", "jsonl", "dedup", "run_outputs", "default",
          "late_queue")}
TAG = uuid.uuid4().hex[:8]
DS = {name: f"rules-{name}-{TAG}" for name in RULES}
LATE_QUEUE = f"created-later-{TAG}"  # named in the rules file, created in LangSmith only mid-test


def rules_toml(jsonl_dir: Path, queue_id: str) -> str:
    r = RULES
    return worked_example_toml() + textwrap.dedent(f'''
        [default]
        dataset = "{DS['default']}"

        [rules."{r['filters']}"]
        dataset = "{DS['filters']}"
        correction_key = ["label"]
        score = {{ key = "quality", min = 0.5 }}

        [rules."{r['run_outputs']}"]
        dataset = "{DS['run_outputs']}"
        outputs = "run"

        [rules."{r['builtins']}"]
        dataset = "{DS['builtins']}"
        transform = ["messages_to_openai", "drop_keys", "redact"]
        drop_keys = ["internal_id"]
        redact_builtins = ["email"]

        [rules."{r['user']}"]
        dataset = "{DS['user']}"
        transform = "user_transforms:picky"

        [[rules."{r['user']}".actions]]
        type = "dataset"

        [[rules."{r['user']}".actions]]
        type = "dataset"
        dataset = "{DS['user']}-two"
        transform = "user_transforms:two"

        [rules."{r['split']}"]
        dataset = "{DS['split']}"
        splits = {{ train = 0.5, test = 0.5 }}

        [rules."{r['queue']}"]
        dataset = "{DS['queue']}"

        [[rules."{r['queue']}".actions]]
        type = "dataset"

        [[rules."{r['queue']}".actions]]
        type = "annotation_queue"
        queue_id = "{queue_id}"

        [rules."{r['late_queue']}"]
        dataset = "{DS['late_queue']}"

        [[rules."{r['late_queue']}".actions]]
        type = "dataset"

        [[rules."{r['late_queue']}".actions]]
        type = "annotation_queue"
        queue = "{LATE_QUEUE}"

        [rules."{r['jsonl']}"]
        dataset = "{DS['jsonl']}"
        transform = "user_transforms:slow"
        splits = {{ train = 0.8, test = 0.2 }}

        [[rules."{r['jsonl']}".actions]]
        type = "jsonl"
        directory = "{jsonl_dir}"

        [rules."{r['dedup']}"]
        dataset = "{DS['dedup']}"
        dedup = true
    ''')


@pytest.fixture(scope="module")
def queue_id(standin: StandIn) -> str:
    return standin.add_queue(f"retry-alone-{TAG}")


@pytest.fixture(scope="module")
def review_queue(standin: StandIn) -> str:
    """The worked example names its queue; the test owns the only queue of that name."""
    return standin.add_queue("ticket-classifier-review")


@pytest.fixture(scope="module")
def jsonl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jsonl")


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn, tmp_path_factory: pytest.TempPathFactory,
          jsonl_dir: Path, queue_id: str, review_queue: str) -> Iterator[Pipeline]:
    home = tmp_path_factory.mktemp("rules")
    (home / "transforms").mkdir()
    (home / "transforms" / "user_transforms.py").write_text(USER_TRANSFORMS)
    rules = home / "rules.toml"
    rules.write_text(rules_toml(jsonl_dir, queue_id))
    pipeline = Pipeline(redis_server, standin, db=53, workers=2, LSWH_RULES_FILE=str(rules),
                        PYTHONPATH=str(home / "transforms"))
    yield pipeline
    pipeline.stop()


def examples_of(standin: StandIn, dataset: str, runs: list[dict[str, Any]], timeout: float = 60
                ) -> dict[str, list[dict[str, Any]]]:
    ids = [r["id"] for r in runs]

    def found() -> bool:
        return len(standin.examples_by_run(ids, dataset)) == len(ids)

    wait_until(found, timeout=timeout, what=f"examples in {dataset}")
    return standin.examples_by_run(ids, dataset)


def accounting(stack: Pipeline, delivery_id: str) -> dict[str, int]:
    raw = stack.redis.hgetall(contract.accounting_key(delivery_id))
    return {k.decode(): int(v) for k, v in raw.items()}


def settled(stack: Pipeline, delivery_id: str, runs: int) -> dict[str, int]:
    """The delivery's accounting once every run has an outcome."""
    def complete() -> bool:
        counts = accounting(stack, delivery_id)
        return sum(v for k, v in counts.items() if k != "received") == runs

    wait_until(complete, timeout=60, what=f"all {runs} runs of {delivery_id} accounted")
    return accounting(stack, delivery_id)


# --- filters and outputs -----------------------------------------------------------------------


def test_correction_key_and_score_filter_pick_runs_and_outputs(stack: Pipeline, standin: StandIn) -> None:
    label = fresh_run(inputs={"t": "label"}, outputs={"o": "model"})
    other_key = fresh_run(inputs={"t": "other"}, outputs={"o": "model"})
    low = fresh_run(inputs={"t": "low"}, outputs={"o": "model"})
    unscored = fresh_run(inputs={"t": "unscored"}, outputs={"o": "model"})
    standin.add_feedback([
        {"run_id": label["id"], "key": "label", "correction": "billing", "modified_at": at(1)},
        {"run_id": label["id"], "key": "quality", "score": 0.9, "modified_at": at(1)},
        # a correction on another key is not one this rule takes: the run's outputs are used
        {"run_id": other_key["id"], "key": "style", "correction": "nicer", "modified_at": at(1)},
        {"run_id": other_key["id"], "key": "quality", "score": 0.5, "modified_at": at(1)},
        {"run_id": low["id"], "key": "quality", "score": 0.2, "modified_at": at(1)},
    ])
    runs = [label, other_key, low, unscored]
    answer = stack.post(delivery(runs, rule_id=RULES["filters"])).json()
    kept = examples_of(standin, DS["filters"], [label, other_key])
    assert kept[label["id"]][0]["outputs"] == {"output": "billing"}
    assert kept[other_key["id"]][0]["outputs"] == {"o": "model"}
    counts = settled(stack, answer["delivery_id"], 4)
    assert counts == {"received": 4, "written": 2, "skipped": 2}
    assert set(standin.examples_by_run([r["id"] for r in runs], DS["filters"])) == {label["id"], other_key["id"]}


def test_outputs_run_takes_the_runs_outputs_over_a_correction(stack: Pipeline, standin: StandIn) -> None:
    run = fresh_run(inputs={"t": 1}, outputs={"o": "model"})
    standin.add_feedback([{"run_id": run["id"], "key": "label", "correction": "human", "modified_at": at(1)}])
    stack.post(delivery([run], rule_id=RULES["run_outputs"]))
    assert examples_of(standin, DS["run_outputs"], [run])[run["id"]][0]["outputs"] == {"o": "model"}


def test_a_rule_not_in_the_file_gets_the_default_table(stack: Pipeline, standin: StandIn) -> None:
    run = fresh_run(inputs={"t": "unlisted"}, outputs={"o": 1})
    stack.post(delivery([run], rule_id=RULES["default"]))  # a rule id the file does not name
    assert examples_of(standin, DS["default"], [run])[run["id"]][0]["outputs"] == {"o": 1}


# --- built-in transforms -----------------------------------------------------------------------


def test_builtins_convert_messages_drop_keys_and_redact(stack: Pipeline, standin: StandIn) -> None:
    chat = json.loads((FIXTURES / "chat_model_constructor.json").read_text())
    chat_run = fresh_run(inputs=chat["inputs"], outputs=chat["outputs"], run_type="llm")
    plain = fresh_run(inputs={"q": "mail me at ana@example.com", "internal_id": 7, "nested": {"internal_id": 8}},
                      outputs={"a": "call +1 415 555 0100", "internal_id": 9})
    stack.post(delivery([chat_run, plain], rule_id=RULES["builtins"]))
    found = examples_of(standin, DS["builtins"], [chat_run, plain])
    chat_example = found[chat_run["id"]][0]
    assert chat_example["inputs"] == {"messages": [
        {"role": "system", "content": "Use the calculator for arithmetic."},
        {"role": "user", "content": "What is 25 raised to the power of 0.5?"},
    ]}
    assert chat_example["outputs"]["message"]["tool_calls"][0]["function"]["name"] == "calculator"
    plain_example = found[plain["id"]][0]
    assert plain_example["inputs"] == {"q": "mail me at <email>", "nested": {}}
    # redact_builtins = ["email"]: phone numbers are left alone
    assert plain_example["outputs"] == {"a": "call +1 415 555 0100"}


# --- the user's transforms -----------------------------------------------------------------------


def test_failing_transform_fails_that_run_alone_with_its_traceback(stack: Pipeline, standin: StandIn) -> None:
    good = [fresh_run(inputs={"i": i}, outputs={"o": i}) for i in range(3)]
    skip = fresh_run(inputs={"skip": True}, outputs={})
    bad = fresh_run(inputs={"explode": True}, outputs={})
    answer = stack.post(delivery([good[0], bad, good[1], skip, good[2]], rule_id=RULES["user"])).json()
    found = examples_of(standin, DS["user"], good)
    assert all(e[0]["inputs"]["seen_by"] == "picky" and e[0]["metadata"]["picky"] for e in found.values())
    counts = settled(stack, answer["delivery_id"], 5)
    assert counts == {"received": 5, "written": 3, "skipped": 1, "failed": 1}
    job = next(j for j in stack.failed_jobs() if bad["id"] in j.id)
    text = job.latest_result().exc_string.strip()  # type: ignore[union-attr]
    reason = "transform user_transforms:picky raised ValueError: cannot label ticket; called with api_key=<redacted>"
    assert text.splitlines()[-1] == f"workers.jobs.RunFailed: run {bad['id']}: {reason}"
    assert "Traceback (most recent call last)" in text and "user_transforms.py" in text
    assert 'raise ValueError("cannot label ticket' in text
    assert "sk-live-0123456789abcdef" not in text
    assert bad["id"] not in standin.examples_by_run([bad["id"], skip["id"]], DS["user"])
    assert skip["id"] not in standin.examples_by_run([bad["id"], skip["id"]], DS["user"])


def test_transform_with_two_examples_writes_both_with_the_first_keeping_the_runs_id(
        stack: Pipeline, standin: StandIn) -> None:
    run = fresh_run(inputs={"q": "hello"}, outputs={"a": 1})
    stack.post(delivery([run], rule_id=RULES["user"]))
    examples = examples_of(standin, f"{DS['user']}-two", [run])[run["id"]]
    assert sorted(e["inputs"]["q"] for e in examples) == ["HELLO", "hello"]
    dataset_id = examples[0]["dataset_id"]
    first = next(e for e in examples if e["inputs"]["q"] == "hello")
    assert first["id"] == example_id(dataset_id, run["id"])
    # the same run again: still two examples, not four
    stack.post(delivery([run], rule_id=RULES["user"], end_time="2024-04-06T00:00:00+00:00"))
    stack.wait_idle()
    assert len(standin.examples_by_run([run["id"]], f"{DS['user']}-two")[run["id"]]) == 2


# --- splits ----------------------------------------------------------------------------------------


def _splits_of(standin: StandIn, runs: list[dict[str, Any]]) -> dict[str, list[str]]:
    found = standin.examples_by_run([r["id"] for r in runs], DS["split"])
    return {run_id: e[0]["metadata"]["dataset_split"] for run_id, e in found.items()}


def test_split_is_fixed_by_run_id_across_deliveries_updates_and_reprocessing(
        stack: Pipeline, standin: StandIn) -> None:
    runs = [fresh_run(inputs={"i": i}, outputs={"o": i}) for i in range(20)]
    expected = {r["id"]: [assign_split(r["id"], [("test", 0.5), ("train", 0.5)])] for r in runs}
    assert {s[0] for s in expected.values()} == {"train", "test"}  # both splits are exercised
    first = stack.post(delivery(runs, rule_id=RULES["split"])).json()
    examples_of(standin, DS["split"], runs)
    assert _splits_of(standin, runs) == expected
    # a second delivery with newer corrections: every example updated, none moves
    standin.add_feedback([{"run_id": r["id"], "key": "label", "correction": f"fixed {i}", "modified_at": at(2)}
                          for i, r in enumerate(runs)])
    second = stack.post(delivery(runs, rule_id=RULES["split"], end_time="2024-04-06T00:00:00+00:00")).json()
    assert second["delivery_id"] != first["delivery_id"]
    assert settled(stack, second["delivery_id"], 20) == {"received": 20, "updated": 20}
    assert _splits_of(standin, runs) == expected
    # the first delivery processed again from its stored body, as `lswh replay` will (not on this branch)
    stack.redis.delete(contract.done_key(first["delivery_id"]), contract.actions_done_key(first["delivery_id"]))
    Queue(contract.QUEUE, connection=stack.redis).enqueue(contract.DELIVERY_JOB, first["delivery_id"])
    stack.wait_idle()
    assert _splits_of(standin, runs) == expected
    assert all(len(e) == 1 for e in standin.examples_by_run([r["id"] for r in runs], DS["split"]).values())


# --- annotation queue ------------------------------------------------------------------------------


def _example_requests(standin: StandIn) -> int:
    """Example reads and writes of any kind (list, create, update)."""
    return sum(n for route, n in standin.stats()["requests"].items() if "examples" in route)


def test_failed_queue_add_is_retried_alone(stack: Pipeline, standin: StandIn, queue_id: str) -> None:
    runs = [fresh_run(inputs={"i": i}, outputs={}) for i in range(3)]
    stack.wait_idle()
    before = _example_requests(standin)
    # more 503s than the door's own retries (2): the add fails, and the delivery job is retried
    with injected(standin, f"POST /api/v1/platform/annotation-queues/{queue_id}/items", times=3, status=503):
        answer = stack.post(delivery(runs, rule_id=RULES["queue"])).json()
        examples_of(standin, DS["queue"], runs)
        wait_until(lambda: len(standin.queue_items(queue_id)) >= 3, timeout=60, what="the runs in the queue")
    assert settled(stack, answer["delivery_id"], 3) == {"received": 3, "written": 3}
    stack.wait_idle()
    items = standin.queue_items(queue_id)
    assert sorted(i["run_id"] for i in items) == sorted(r["id"] for r in runs)  # each run once
    assert items[0]["project_id"] == runs[0]["session_id"]
    # the first attempt read (1) and created (1) the examples; the retry did not touch them at all
    assert _example_requests(standin) == before + 2
    assert all(len(e) == 1 for e in standin.examples_by_run([r["id"] for r in runs], DS["queue"]).values())


def test_a_queue_not_found_fails_the_run_and_a_requeue_redoes_only_the_queue_add(
        stack: Pipeline, standin: StandIn) -> None:
    run = fresh_run(inputs={"late": 1}, outputs={})
    answer = stack.post(delivery([run], rule_id=RULES["late_queue"])).json()
    examples_of(standin, DS["late_queue"], [run])
    assert settled(stack, answer["delivery_id"], 1) == {"received": 1, "failed": 1}
    stack.wait_idle()
    job = next(j for j in stack.failed_jobs() if run["id"] in j.id)
    assert job.latest_result().exc_string.strip().endswith(  # type: ignore[union-attr]
        f"run {run['id']}: annotation queue '{LATE_QUEUE}' not found in LangSmith (create it, then requeue)")
    # the operator creates the queue and requeues the failed run
    late_queue = standin.add_queue(LATE_QUEUE)
    before = _example_requests(standin)
    FailedJobRegistry(queue=Queue(contract.QUEUE, connection=stack.redis)).requeue(job.id)
    wait_until(lambda: len(standin.queue_items(late_queue)) == 1, timeout=60, what="the run in the queue")
    stack.wait_idle()
    assert standin.queue_items(late_queue)[0]["run_id"] == run["id"]
    assert _example_requests(standin) == before  # the example was done; only the queue add ran
    assert accounting(stack, answer["delivery_id"]) == {"received": 1, "failed": 0, "written": 1}


# --- jsonl ---------------------------------------------------------------------------------------------


def test_jsonl_from_two_workers_at_once_reads_back_complete(stack: Pipeline, jsonl_dir: Path) -> None:
    deliveries = [[fresh_run(inputs={"d": d, "i": i}, outputs={"o": i}) for i in range(25)] for d in range(8)]
    for runs in deliveries:
        stack.post(delivery(runs, rule_id=RULES["jsonl"]))
    everything = [r for runs in deliveries for r in runs]
    wait_until(lambda: len(read_jsonl(jsonl_dir, DS["jsonl"])) == len(everything), timeout=90,
               what="every run in the jsonl files")
    stack.wait_idle()
    lines = read_jsonl(jsonl_dir, DS["jsonl"])
    assert {line["run_id"] for line in lines.values()} == {r["id"] for r in everything}
    by_run = {line["run_id"]: line for line in lines.values()}
    for run in everything:
        line = by_run[run["id"]]
        assert line["inputs"] == run["inputs"] and line["outputs"] == run["outputs"]
        assert line["split"] == assign_split(run["id"], [("test", 0.2), ("train", 0.8)])
    writers = {path.stem for path in jsonl_dir.glob("*/*/*.jsonl")}
    assert len(writers) == 2, f"both worker processes should have written: {writers}"


# --- dedup ---------------------------------------------------------------------------------------------


def test_dedup_skips_repeated_inputs_across_deliveries_and_workers(stack: Pipeline, standin: StandIn) -> None:
    first = [fresh_run(inputs={"q": f"same {i}"}, outputs={"o": "a"}) for i in range(10)]
    # the same inputs, keys in another order, in other runs of another delivery
    second = [fresh_run(inputs=dict(reversed(list({"q": f"same {i}"}.items()))), outputs={"o": "b"})
              for i in range(10)]
    answers = [stack.post(delivery(runs, rule_id=RULES["dedup"])).json() for runs in (first, second)]
    counts = [settled(stack, a["delivery_id"], 10) for a in answers]
    assert sum(c.get("written", 0) for c in counts) == 10
    assert sum(c.get("skipped", 0) for c in counts) == 10
    found = standin.examples_by_run([r["id"] for r in first + second], DS["dedup"])
    assert sorted(e[0]["inputs"]["q"] for e in found.values()) == sorted(f"same {i}" for i in range(10))


# --- the worked example of docs/rules.md ------------------------------------------------------------------------


def test_docs_worked_example(stack: Pipeline, standin: StandIn, review_queue: str) -> None:
    """Four runs as the table in docs/rules.md shows them, plus PII and a repeated ticket."""
    corrected_good = fresh_run(inputs={"ticket": "Refund ORD-123456 please, ana@example.com, +1 415 555 0100"},
                               outputs={"label": "shipping"})
    corrected_low = fresh_run(inputs={"ticket": "My key sk-proj-abcdefghijklmnop1234 leaked"},
                              outputs={"label": "other"})
    low_uncorrected = fresh_run(inputs={"ticket": "Where is my parcel?"}, outputs={"label": "shipping"})
    unscored = fresh_run(inputs={"ticket": "Hello"}, outputs={"label": "other"})
    repeated = fresh_run(inputs={"ticket": "Refund ORD-654321 please, bo@example.org, +1 415 555 0199"},
                         outputs={"label": "shipping"})
    standin.add_feedback([
        {"run_id": corrected_good["id"], "key": "label", "correction": "billing", "modified_at": at(1)},
        {"run_id": corrected_good["id"], "key": "correctness", "score": 0.9, "modified_at": at(1)},
        {"run_id": corrected_low["id"], "key": "label", "correction": "security", "modified_at": at(1)},
        {"run_id": corrected_low["id"], "key": "correctness", "score": 0.3, "modified_at": at(1)},
        # a correction on another key is not a label
        {"run_id": low_uncorrected["id"], "key": "tone", "correction": "friendlier", "modified_at": at(1)},
        {"run_id": low_uncorrected["id"], "key": "correctness", "score": 0.2, "modified_at": at(1)},
        {"run_id": repeated["id"], "key": "label", "correction": "billing", "modified_at": at(1)},
    ])
    runs = [corrected_good, corrected_low, low_uncorrected, unscored, repeated]
    answer = stack.post(delivery(runs, rule_id=WORKED_RULE)).json()
    counts = settled(stack, answer["delivery_id"], 5)
    found = standin.examples_by_run([r["id"] for r in runs], "ticket-classifier")
    # corrected runs only; the repeated ticket redacts to the same inputs as the first: one example
    assert set(found) == {corrected_good["id"], corrected_low["id"]}
    good = found[corrected_good["id"]][0]
    assert good["inputs"] == {"ticket": "Refund <order_number> please, <email>, <phone>"}
    assert good["outputs"] == {"output": "billing"}
    assert found[corrected_low["id"]][0]["inputs"] == {"ticket": "My key <api_key> leaked"}
    for run in (corrected_good, corrected_low):
        split = assign_split(run["id"], [("test", 0.2), ("train", 0.8)])
        assert found[run["id"]][0]["metadata"]["dataset_split"] == [split]
    items = [i["run_id"] for i in standin.queue_items(review_queue)]
    assert sorted(items) == sorted([corrected_low["id"], low_uncorrected["id"]])
    # written: two examples (+ their queue adds); skipped: unscored, repeated (dedup)
    assert counts == {"received": 5, "written": 3, "skipped": 2}


def test_a_run_delivered_again_is_not_added_to_the_queue_twice(stack: Pipeline, standin: StandIn,
                                                               queue_id: str) -> None:
    runs = [fresh_run(inputs={"again": i}, outputs={}) for i in range(2)]
    first = stack.post(delivery(runs, rule_id=RULES["queue"])).json()
    settled(stack, first["delivery_id"], 2)
    # a new delivery (LangSmith matched the runs again, or a backfill): the examples and the queue
    # already have them
    second = stack.post(delivery(runs, rule_id=RULES["queue"], end_time="2024-04-07T00:00:00+00:00")).json()
    assert settled(stack, second["delivery_id"], 2) == {"received": 2, "unchanged": 2}
    ids = {r["id"] for r in runs}
    assert sorted(i["run_id"] for i in standin.queue_items(queue_id) if i["run_id"] in ids) == sorted(ids)
