"""Thread rules end to end (issue 16): a rule whose `group_by` is THREAD_ID gets one example per
thread, from the stand-in's assumed thread delivery and from a body of runs that carry thread ids;
a longer thread updates its example, a stale read never shortens it, a transform sees the whole
thread, an annotation-queue action adds a THREAD item."""

from __future__ import annotations

import datetime as dt
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lswh_core import contract
from tests.support.commands import run_lswh
from tests.support.procs import RedisServer, wait_until
from tests.support.stack import Pipeline, StandIn, delivery
from workers.actions.base import keep_longer
from workers.actions.jsonl import read_jsonl
from workers.build.examples import example_id
from workers.flow.threads import Refused, ThreadRef, default_inputs, plan, threads_from_body
from workers.langsmith.door import Turn, thread_filter_for
from workers.transforms import HydratedThread, HydratedTurn, thread_to_openai

TAG = uuid.uuid4().hex[:8]
PROJECT = str(uuid.uuid4())
RULES = {name: str(uuid.uuid4()) for name in ("main", "openai", "transform", "queue", "trajectory", "runs_rule",
                                             "jsonl")}
DS = {name: f"threads-{name}-{TAG}" for name in RULES}
QUEUE = f"threads-review-{TAG}"
NOW = dt.datetime.now(dt.UTC)

THREAD_TRANSFORMS = '''
def count_turns(thread):
    return {"inputs": {"turns_seen": len(thread["turns"]), "first": thread["turns"][0]["inputs"]},
            "outputs": thread["outputs"], "metadata": {"saw_thread": thread["thread_id"]}}
'''


# --- pure parts ----------------------------------------------------------------------------------


def rule(group_by: str | None) -> Any:
    from workers.langsmith.door import RuleInfo

    return RuleInfo(id=str(uuid.uuid4()), project_id=PROJECT, dataset_id=None, filter=None, trace_filter=None,
                    tree_filter=None, is_enabled=True, sampling_rate=1.0, group_by=group_by)


def test_thread_objects_give_their_ids_once_each() -> None:
    refs = threads_from_body([{"thread_id": "a"}, {"id": "b", "project_id": "p"}, "c", {"thread_id": "a"}])
    assert refs == [ThreadRef("a"), ThreadRef("b", "p"), ThreadRef("c")]


@pytest.mark.parametrize("threads", [{"thread_id": "a"}, [{"name": "x"}], [None], "t"])
def test_malformed_threads_are_refused_with_the_reason(threads: Any) -> None:
    with pytest.raises(Refused, match="malformed threads"):
        threads_from_body(threads)


def test_the_rule_decides_not_the_keys() -> None:
    body = {"rule_id": "r", "threads": [{"thread_id": "t"}]}
    with pytest.raises(Refused, match=r"unrecognised delivery shape \(top-level keys: rule_id, threads\).*not a "
                                      r"thread rule"):
        plan(body, rule(None))
    assert plan(body, rule("THREAD_ID")).threads == [ThreadRef("t")]  # type: ignore[union-attr]
    runs = {"rule_id": "r", "runs": [{"id": "1", "extra": {"metadata": {"conversation_id": "c"}}, "session_id": "p"},
                                     {"id": "2"}]}
    assert plan(runs, rule(None)) is None  # a runs rule: today's path
    threaded = plan(runs, rule("THREAD_ID"))
    assert threaded is not None and threaded.threads == [ThreadRef("c", "p")] and threaded.runs_without_thread == ["2"]
    with pytest.raises(Refused, match="TRAJECTORY_ID"):
        plan(body, rule("TRAJECTORY_ID"))
    both = plan({**runs, "threads": ["c", "d"]}, rule("THREAD_ID"))
    assert both is not None and both.threads == [ThreadRef("c", "p"), ThreadRef("d")]
    empty = plan({"rule_id": "r", "runs": []}, rule("THREAD_ID"))
    assert empty is not None and empty.threads == []
    with pytest.raises(Refused, match="none of the 1 runs carries a thread id"):
        plan({"rule_id": "r", "runs": [{"id": "1"}]}, rule("THREAD_ID"))


def test_the_thread_query_uses_the_docs_metadata_keys() -> None:
    assert thread_filter_for(["t1", 't"2']) == (
        'and(in(metadata_key, ["thread_id", "session_id", "conversation_id"]), in(metadata_value, ["t1", "t\\"2"]))')


def test_a_longer_stored_thread_is_kept() -> None:
    assert keep_longer({"metadata": {"thread_turns": 3}}, {"metadata": {"thread_turns": 2}})
    assert not keep_longer({"metadata": {"thread_turns": 2}}, {"metadata": {"thread_turns": 3}})
    assert not keep_longer({"metadata": {}}, {"metadata": {"thread_turns": 1}})


def test_default_inputs_are_the_turns_up_to_the_last() -> None:
    turns = [Turn(id=str(n), trace_id=None, name=None, start_time=None, thread_id="t", inputs={"q": n},
                  outputs={"a": n}) for n in range(3)]
    assert default_inputs(turns) == {"turns": [{"inputs": {"q": 0}, "outputs": {"a": 0}},
                                               {"inputs": {"q": 1}, "outputs": {"a": 1}}, {"inputs": {"q": 2}}]}


def test_a_thread_becomes_one_openai_conversation() -> None:
    turns = [HydratedTurn(run_id="1", trace_id=None, name=None, start_time=None, inputs={"question": "hi"},
                          outputs={"answer": "hello"}),
             HydratedTurn(run_id="2", trace_id=None, name=None, start_time=None,
                          inputs={"messages": [{"type": "human", "content": "hi"}, {"type": "ai", "content": "hello"},
                                               {"type": "human", "content": "and then?"}]},
                          outputs={"answer": "then this"})]
    thread = HydratedThread(id="t", thread_id="t", project_id=None, rule_id=None, turns=turns, inputs={},
                            outputs={"output": "corrected"}, run_outputs=None, correction=None, feedback=[],
                            metadata={})
    draft = thread_to_openai(thread)
    assert draft["inputs"] == {"messages": [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": "hello"},
                                            {"role": "user", "content": "and then?"}]}
    assert draft.get("outputs") == {"message": {"role": "assistant", "content": "corrected"}}


# --- end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def queue_id(standin: StandIn) -> str:
    return standin.add_queue(QUEUE)


@pytest.fixture(scope="module")
def jsonl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("thread-lines")


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn, tmp_path_factory: pytest.TempPathFactory,
          queue_id: str, jsonl_dir: Path) -> Iterator[Pipeline]:
    # group_by in lower case: the pipeline reads it case-insensitively.
    standin.add_rules([{"id": RULES[name], "project_id": PROJECT, "group_by": "thread_id"}
                       for name in ("main", "openai", "transform", "queue", "runs_rule", "jsonl")])
    standin.add_rules([{"id": RULES["trajectory"], "project_id": PROJECT, "group_by": "TRAJECTORY_ID"}])
    home = tmp_path_factory.mktemp("threads")
    (home / "thread_transforms.py").write_text(THREAD_TRANSFORMS)
    rules = home / "rules.toml"
    rules.write_text(textwrap.dedent(f'''
        [rules."{RULES['main']}"]
        dataset = "{DS['main']}"

        [rules."{RULES['runs_rule']}"]
        dataset = "{DS['runs_rule']}"

        [rules."{RULES['openai']}"]
        dataset = "{DS['openai']}"
        transform = "messages_to_openai"

        [rules."{RULES['transform']}"]
        dataset = "{DS['transform']}"
        transform = "thread_transforms:count_turns"

        [rules."{RULES['queue']}"]
        dataset = "{DS['queue']}"

        [[rules."{RULES['queue']}".actions]]
        type = "annotation_queue"
        queue_id = "{queue_id}"

        [rules."{RULES['jsonl']}"]
        dataset = "{DS['jsonl']}"

        [[rules."{RULES['jsonl']}".actions]]
        type = "jsonl"
        directory = "{jsonl_dir}"
    '''))
    pipeline = Pipeline(redis_server, standin, db=60, workers=1, LSWH_RULES_FILE=str(rules), PYTHONPATH=str(home),
                        LSWH_RETRIES="2")
    yield pipeline
    pipeline.stop()


def add_turns(standin: StandIn, thread_id: str, count: int, *, first: int = 0, key: str = "thread_id"
              ) -> list[dict[str, Any]]:
    """Root runs of a thread in PROJECT, one minute apart, an hour ago."""
    runs = []
    for n in range(first, first + count):
        run_id = str(uuid.uuid4())
        runs.append({"id": run_id, "trace_id": run_id, "session_id": PROJECT, "name": "chat",
                     "start_time": (NOW - dt.timedelta(hours=1) + dt.timedelta(minutes=n)).isoformat(),
                     "inputs": {"question": f"q{n}"}, "outputs": {"answer": f"a{n}"},
                     "extra": {"metadata": {key: thread_id}}})
    standin.add_runs(runs)
    return runs


def thread_body(standin: StandIn, rule_id: str, thread_ids: list[str], **fields: str) -> dict[str, Any]:
    """The stand-in's ASSUMED thread delivery (standin/lswh_standin/threads.py: not documented anywhere)."""
    return standin.admin("POST", "thread-delivery", {"rule_id": rule_id, "thread_ids": thread_ids,  # type: ignore[no-any-return]
                                                     **fields})


def thread_example(standin: StandIn, dataset: str, thread_id: str, turns: int | None = None,
                   timeout: float = 60) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def ready() -> bool:
        for example in standin.examples(dataset):
            if (example.get("metadata") or {}).get("thread_id") == thread_id:
                found.update(example)
                return turns is None or example["metadata"].get("thread_turns") == turns
        return False

    wait_until(ready, timeout=timeout, what=f"the example of thread {thread_id} in {dataset}")
    return found


def test_thread_delivery_of_the_assumed_shape_becomes_one_example_per_thread(stack: Pipeline) -> None:
    standin = stack.standin
    threads = {f"t-{uuid.uuid4()}": n for n in (2, 3)}
    turns = {thread_id: add_turns(standin, thread_id, n) for thread_id, n in threads.items()}
    body = thread_body(standin, RULES["main"], list(threads))
    answer = stack.post(body).json()
    assert answer["threads"] == 2 and answer["runs"] == 0
    for thread_id, n in threads.items():
        example = thread_example(standin, DS["main"], thread_id, n)
        last = turns[thread_id][-1]
        assert example["outputs"] == last["outputs"]
        assert example["inputs"]["turns"][-1] == {"inputs": last["inputs"]}
        assert len(example["inputs"]["turns"]) == n
        assert example["metadata"]["run_id"] == last["id"] and example["metadata"]["rule_id"] == RULES["main"]
    stack.wait_accounted(answer["delivery_id"], 2)
    # The rule's first delivery is logged with its key names, so the real shape becomes known.
    output = "".join(worker.output() for worker in stack.workers)
    line = (f"first delivery of thread rule {RULES['main']}: top-level keys [end_time, rule_id, start_time, threads]; "
            "threads[0] keys [project_id, thread_id]")
    assert output.count(line) == 1, output[-2000:]


def test_a_correction_on_the_last_turn_replaces_the_outputs(stack: Pipeline) -> None:
    standin = stack.standin
    thread_id = f"t-{uuid.uuid4()}"
    turns = add_turns(standin, thread_id, 2)
    standin.add_feedback([{"run_id": turns[-1]["id"], "key": "correctness", "correction": "the right answer"},
                          {"run_id": turns[0]["id"], "key": "correctness", "correction": "not the last turn"}])
    stack.post(thread_body(standin, RULES["main"], [thread_id]))
    example = thread_example(standin, DS["main"], thread_id, 2)
    assert example["outputs"] == {"output": "the right answer"}


def test_more_turns_update_the_example_and_a_stale_read_never_shortens_it(stack: Pipeline) -> None:
    standin = stack.standin
    thread_id = f"t-{uuid.uuid4()}"
    add_turns(standin, thread_id, 2)
    stack.post(thread_body(standin, RULES["main"], [thread_id]))
    first = thread_example(standin, DS["main"], thread_id, 2)

    third = add_turns(standin, thread_id, 1, first=2)[0]
    later = thread_body(standin, RULES["main"], [thread_id], end_time=(NOW + dt.timedelta(minutes=1)).isoformat())
    stack.post(later)
    longer = thread_example(standin, DS["main"], thread_id, 3)
    assert longer["id"] == first["id"]  # the same example, updated
    assert longer["outputs"] == third["outputs"]

    # A stale read: the third turn is no longer found (as if the index lagged): nothing shrinks.
    standin.add_runs([{"id": third["id"], "extra": {"metadata": {"thread_id": f"elsewhere-{uuid.uuid4()}"}}}])
    stale = thread_body(standin, RULES["main"], [thread_id], end_time=(NOW + dt.timedelta(minutes=2)).isoformat())
    answer = stack.post(stale).json()
    figures = stack.wait_accounted(answer["delivery_id"], 1)
    assert figures["unchanged"] == 1
    kept = [e for e in standin.examples(DS["main"]) if e["metadata"].get("thread_id") == thread_id]
    assert len(kept) == 1 and kept[0]["metadata"]["thread_turns"] == 3 and kept[0]["outputs"] == third["outputs"]


def test_runs_that_carry_thread_ids_are_grouped_by_thread(stack: Pipeline) -> None:
    standin = stack.standin
    thread_id = f"t-{uuid.uuid4()}"
    runs = add_turns(standin, thread_id, 3, key="session_id")
    body = delivery([{**runs[-1], "inputs": None, "outputs": None}, {**runs[-2], "inputs": None, "outputs": None}],
                    rule_id=RULES["runs_rule"])
    answer = stack.post(body).json()
    example = thread_example(standin, DS["runs_rule"], thread_id, 3)
    assert example["outputs"] == runs[-1]["outputs"]
    figures = stack.wait_accounted(answer["delivery_id"], 1)  # one thread, not two runs
    assert figures["written"] + figures["updated"] + figures["unchanged"] == 1
    per_run = standin.examples_by_run([r["id"] for r in runs], DS["runs_rule"])
    assert list(per_run) == [runs[-1]["id"]]  # one example, whose source run is the last turn


def test_the_transform_receives_the_whole_thread(stack: Pipeline) -> None:
    standin = stack.standin
    thread_id = f"t-{uuid.uuid4()}"
    add_turns(standin, thread_id, 4, key="conversation_id")
    stack.post(thread_body(standin, RULES["transform"], [thread_id]))

    def seen() -> list[dict[str, Any]]:
        return [e for e in standin.examples(DS["transform"]) if e["metadata"].get("saw_thread") == thread_id]

    wait_until(lambda: bool(seen()), timeout=60, what="the transformed thread example")
    example = seen()[0]
    assert example["inputs"] == {"turns_seen": 4, "first": {"question": "q0"}}
    assert example["metadata"]["thread_turns"] == 4  # the pipeline's own keys ride along


def test_messages_to_openai_makes_a_conversation(stack: Pipeline) -> None:
    standin = stack.standin
    thread_id = f"t-{uuid.uuid4()}"
    add_turns(standin, thread_id, 2)
    stack.post(thread_body(standin, RULES["openai"], [thread_id]))
    example = thread_example(standin, DS["openai"], thread_id, 2)
    assert example["inputs"] == {"messages": [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"},
                                              {"role": "user", "content": "q1"}]}
    assert example["outputs"] == {"message": {"role": "assistant", "content": "a1"}}


def test_an_annotation_queue_action_adds_a_thread_item_once(stack: Pipeline, queue_id: str) -> None:
    standin = stack.standin
    thread_id = f"t-{uuid.uuid4()}"
    add_turns(standin, thread_id, 2)
    for minute in (0, 1):  # two deliveries of the same thread
        body = thread_body(standin, RULES["queue"], [thread_id],
                           end_time=(NOW + dt.timedelta(minutes=minute)).isoformat())
        stack.wait_accounted(stack.post(body).json()["delivery_id"], 1)
    items = [i for i in standin.queue_items(queue_id) if i.get("thread_id") == thread_id]
    assert len(items) == 1
    assert items[0]["item_type"] == "THREAD" and items[0]["project_id"] == PROJECT


def test_the_jsonl_action_writes_one_line_per_thread_never_a_shorter_one_after(stack: Pipeline,
                                                                                jsonl_dir: Path) -> None:
    standin = stack.standin
    thread_id = f"t-{uuid.uuid4()}"
    turns = add_turns(standin, thread_id, 3)
    stack.wait_accounted(stack.post(thread_body(standin, RULES["jsonl"], [thread_id])).json()["delivery_id"], 1)
    # A stale read (the last turn not found) is not appended after the longer line.
    standin.add_runs([{"id": turns[-1]["id"], "extra": {"metadata": {"thread_id": f"elsewhere-{uuid.uuid4()}"}}}])
    stale = thread_body(standin, RULES["jsonl"], [thread_id], end_time=(NOW + dt.timedelta(minutes=5)).isoformat())
    figures = stack.wait_accounted(stack.post(stale).json()["delivery_id"], 1)
    assert figures["unchanged"] == 1
    lines = [line for line in read_jsonl(jsonl_dir, DS["jsonl"]).values()
             if line["metadata"]["thread_id"] == thread_id]
    assert len(lines) == 1
    assert lines[0]["metadata"]["thread_turns"] == 3 and lines[0]["run_id"] == turns[-1]["id"]
    assert lines[0]["id"] == example_id(DS["jsonl"], f"thread:{thread_id}")  # as a dataset's, from its name


def test_a_trajectory_rule_and_an_unknown_thread_fail_visibly(stack: Pipeline) -> None:
    standin = stack.standin
    body = {"rule_id": RULES["trajectory"], "start_time": NOW.isoformat(), "end_time": NOW.isoformat(),
            "threads": [{"thread_id": "x"}]}
    delivery_id = stack.post(body).json()["delivery_id"]

    def failed_with(text: str) -> bool:
        return any(text in (job.latest_result().exc_string or "") for job in stack.failed_jobs()
                   if job.latest_result() is not None)

    wait_until(lambda: failed_with(f"delivery {delivery_id}: rule {RULES['trajectory']} groups by TRAJECTORY_ID"),
               timeout=30, what="the trajectory delivery's failed job")

    missing = f"t-missing-{uuid.uuid4()}"
    answer = stack.post(thread_body(standin, RULES["main"], [missing])).json()
    # Retried (LangSmith may not have indexed the runs yet), then split off as a job of its own.
    wait_until(lambda: failed_with(f"thread {missing}: no root runs of thread {missing}"), timeout=90,
               what="the unknown thread's failed job")
    job_id = contract.thread_job_id(answer["delivery_id"], missing)
    assert job_id in [job.id for job in stack.failed_jobs()]
    assert stack.wait_accounted(answer["delivery_id"], 1)["failed"] == 1

    # Its runs arrive; requeueing the thread's job redoes that thread alone.
    add_turns(standin, missing, 2)
    requeued = run_lswh(stack.env, "requeue", job_id)
    assert requeued.returncode == 0, requeued.stderr
    assert thread_example(standin, DS["main"], missing, 2)["metadata"]["thread_id"] == missing
    wait_until(lambda: stack.wait_accounted(answer["delivery_id"], 1)["failed"] == 0, timeout=30,
               what="the requeued thread's accounting")


# --- reconciliation and backfill read group_by ---------------------------------------------------


def test_reconciliation_skips_a_thread_rule_saying_why() -> None:
    from workers.reconcile import pick_rules

    runs_rule, thread_rule = rule(None), rule("THREAD_ID")
    chosen, skipped = pick_rules([runs_rule, thread_rule], {runs_rule.id, thread_rule.id})
    assert chosen == [runs_rule]
    assert skipped == [f"rule {thread_rule.id}: matches whole threads (group_by THREAD_ID), not runs; "
                       "thread rules are not reconciled"]


def test_backfill_of_a_thread_rule_exits_2_with_the_reason(stack: Pipeline) -> None:
    for name in ("main", "trajectory"):
        done = run_lswh(stack.env, "backfill", "--rule", RULES[name], "--since", "2h")
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "matches whole threads (group_by" in done.stderr and "cannot backfill it" in done.stderr


# --- the stand-in ---------------------------------------------------------------------------------


def test_the_standin_finds_a_threads_root_runs_by_the_docs_filter(fresh: StandIn) -> None:
    from tests.support.stack import fresh_key

    thread_id = f"t-{uuid.uuid4()}"
    turns = add_turns(fresh, thread_id, 2, key="conversation_id")
    child = {"id": str(uuid.uuid4()), "trace_id": turns[0]["id"], "parent_run_id": turns[0]["id"],
             "session_id": PROJECT, "extra": {"metadata": {"conversation_id": thread_id}}}
    add_turns(fresh, f"t-other-{uuid.uuid4()}", 1)
    fresh.add_runs([child])
    answer = fresh.http.post("/api/v2/runs/query", headers={"x-api-key": fresh_key()}, json={
        "project_ids": [PROJECT], "is_root": True, "filter": thread_filter_for([thread_id]),
        "selects": ["ID", "THREAD_ID", "START_TIME"]})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert sorted(i["id"] for i in items) == sorted(t["id"] for t in turns)  # roots of this thread only
    assert {i["thread_id"] for i in items} == {thread_id}


def test_the_standin_thread_delivery_is_the_assumed_shape(fresh: StandIn) -> None:
    [thread_rule] = fresh.add_rules([{"project_id": PROJECT, "group_by": "THREAD_ID"}])
    body = thread_body(fresh, thread_rule, ["t1"], start_time="s", end_time="e")
    assert body == {"rule_id": thread_rule, "start_time": "s", "end_time": "e",
                    "threads": [{"thread_id": "t1", "project_id": PROJECT}]}
    [runs_rule] = fresh.add_rules([{"project_id": PROJECT}])
    refused = fresh.http.post("/_admin/thread-delivery", json={"rule_id": runs_rule, "thread_ids": ["t1"]})
    assert refused.status_code == 400
