"""Action kinds of one's own: a module of a test package (tests/support/echo_action.py) registers
a kind, a rules file names the module, and a real ingress and RQ worker deliver to it next to a
built-in action, with nothing in workers/ knowing the kind."""

from __future__ import annotations

import datetime as dt
import json
import re
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lswh_core.rules import RulesError, load_rules
from lswh_core.settings import Settings
from tests.support.faults import dataset_id, injected
from tests.support.procs import ROOT, RedisServer, wait_until
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run

RULE = str(uuid.uuid4())
THREAD_RULE = str(uuid.uuid4())  # a LangSmith rule that matches whole threads
THREAD_RULE_TAKEN = str(uuid.uuid4())  # another, whose kind of one's own takes threads
PROJECT = str(uuid.uuid4())
TAG = uuid.uuid4().hex[:8]
ECHO_LIST = f"echo-{TAG}"
THREADS_LIST = f"echo-threads-{TAG}"
DATASET = f"registry-{TAG}"


def rules_toml() -> str:
    return textwrap.dedent(f"""\
        action_modules = ["tests.support.echo_action"]

        [rules."{RULE}"]
        dataset = "{DATASET}"
        transform = "drop_keys"
        drop_keys = ["secret"]

        [[rules."{RULE}".actions]]
        type = "echo"
        list = "{ECHO_LIST}"

        [[rules."{RULE}".actions]]
        type = "dataset"

        [rules."{THREAD_RULE}"]
        dataset = "{DATASET}-threads"

        [[rules."{THREAD_RULE}".actions]]
        type = "echo"
        list = "{ECHO_LIST}"

        [[rules."{THREAD_RULE}".actions]]
        type = "dataset"

        [rules."{THREAD_RULE_TAKEN}"]
        dataset = "{DATASET}-taken"

        [[rules."{THREAD_RULE_TAKEN}".actions]]
        type = "echo-threads"
        list = "{THREADS_LIST}"
        """)


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Pipeline]:
    standin.add_rules([{"id": rule, "project_id": PROJECT, "group_by": "THREAD_ID"}
                       for rule in (THREAD_RULE, THREAD_RULE_TAKEN)])
    rules = tmp_path_factory.mktemp("registry") / "rules.toml"
    rules.write_text(rules_toml())
    # The user's package on PYTHONPATH, as for transforms: here the repository's tests package.
    pipeline = Pipeline(redis_server, standin, db=35, LSWH_RULES_FILE=str(rules), PYTHONPATH=str(ROOT))
    yield pipeline
    pipeline.stop()


def test_a_registered_kind_receives_the_rules_examples_next_to_a_builtin(stack: Pipeline, standin: StandIn) -> None:
    runs = [fresh_run(inputs={"q": f"question {i}", "secret": "s3cr3t"}, outputs={"a": i}) for i in range(3)]
    answer = stack.post(delivery(runs, rule_id=RULE)).json()
    counts = stack.wait_accounted(answer["delivery_id"], len(runs))
    assert counts.get("written") == len(runs), counts
    wait_until(lambda: stack.redis.llen(ECHO_LIST) == len(runs), timeout=30, what="the echo list")
    echoed = {row["source_run_id"]: row for row in (json.loads(raw) for raw in stack.redis.lrange(ECHO_LIST, 0, -1))}
    assert set(echoed) == {run["id"] for run in runs}
    for run in runs:
        row = echoed[run["id"]]
        # the rule's transform ran before the kind saw the example
        assert row["inputs"] == {"q": run["inputs"]["q"]} and row["outputs"] == run["outputs"]
        assert row["dataset"] == DATASET
    examples = standin.examples_by_run([run["id"] for run in runs], DATASET)
    assert {run_id: [e["inputs"] for e in found] for run_id, found in examples.items()} == {
        run["id"]: [{"q": run["inputs"]["q"]}] for run in runs}


def test_a_failed_builtin_is_retried_alone_and_the_kind_is_not_written_again(stack: Pipeline, standin: StandIn
                                                                          ) -> None:
    """The (action key, run id) record of a delivery covers a kind of one's own too: when the
    dataset action fails and the job is retried, the echo that finished is not redone."""
    warm = [fresh_run(inputs={"q": "warm"}, outputs={"a": 0})]
    stack.wait_accounted(stack.post(delivery(warm, rule_id=RULE)).json()["delivery_id"], 1)  # the dataset exists
    stack.wait_idle()
    before = stack.redis.llen(ECHO_LIST)
    runs = [fresh_run(inputs={"q": f"retried {i}"}, outputs={"a": i}) for i in range(2)]
    # Three 503s outlast the SDK's own retries: the delivery job itself is retried.
    with injected(standin, f"POST /v1/platform/datasets/{dataset_id(standin, DATASET)}/examples", times=3, status=503):
        answer = stack.post(delivery(runs, rule_id=RULE)).json()
        wait_until(lambda: len(standin.examples_by_run([r["id"] for r in runs], DATASET)) == len(runs), timeout=60,
                   what="the examples, written on a retry")
    assert stack.wait_accounted(answer["delivery_id"], len(runs)).get("written") == len(runs)
    stack.wait_idle()
    echoed = [json.loads(raw)["source_run_id"] for raw in stack.redis.lrange(ECHO_LIST, before, -1)]
    assert sorted(echoed) == sorted(run["id"] for run in runs)  # each run once


def deliver_thread(stack: Pipeline, standin: StandIn, rule_id: str) -> tuple[str, str, dict[str, int]]:
    """A thread of one turn in the rules' project, delivered as `rule_id`'s: (thread id, its run
    id, the delivery's figures once accounted)."""
    thread_id = f"t-{uuid.uuid4()}"
    run_id = str(uuid.uuid4())
    standin.add_runs([{"id": run_id, "trace_id": run_id, "session_id": PROJECT, "name": "chat",
                       "start_time": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat(),
                       "inputs": {"question": "q"}, "outputs": {"answer": "a"},
                       "extra": {"metadata": {"thread_id": thread_id}}}])
    answer = stack.post(standin.admin("POST", "thread-delivery", {"rule_id": rule_id, "thread_ids": [thread_id]})
                        ).json()
    assert answer["threads"] == 1
    return thread_id, run_id, stack.wait_accounted(answer["delivery_id"], 1)


def test_a_kind_that_takes_threads_receives_one_row_per_thread(stack: Pipeline, standin: StandIn) -> None:
    """A kind of one's own that sets `threads` gets a thread rule's threads through Destination's
    defaults, with nothing in workers/ knowing it: one row per thread, under the thread's key,
    the pipeline's thread metadata on it and the last turn as its source run."""
    thread_id, run_id, counts = deliver_thread(stack, standin, THREAD_RULE_TAKEN)
    assert counts.get("written") == 1, counts
    [row] = [json.loads(raw) for raw in stack.redis.lrange(THREADS_LIST, 0, -1)]
    assert row["source_run_id"] == run_id and row["dataset"] == f"{DATASET}-taken"
    assert row["metadata"]["thread_id"] == thread_id and row["metadata"]["thread_turns"] == 1
    assert row["inputs"] == {"turns": [{"inputs": {"question": "q"}}]}


def test_a_thread_rule_fails_a_kind_that_does_not_take_threads_and_writes_the_builtin(
        stack: Pipeline, standin: StandIn) -> None:
    """The thread path (workers/flow/threads.py) takes a kind only if it sets `threads`: a kind of
    one's own without it fails the thread, plainly, instead of being written wrongly."""
    stack.wait_idle()
    before = stack.redis.llen(ECHO_LIST)
    thread_id, _, counts = deliver_thread(stack, standin, THREAD_RULE)
    assert counts.get("failed") == 1, counts
    wait_until(lambda: any((e.get("metadata") or {}).get("thread_id") == thread_id
                           for e in standin.examples(f"{DATASET}-threads")), timeout=30, what="the thread's example")
    assert stack.redis.llen(ECHO_LIST) == before
    reasons = [job.latest_result().exc_string.strip().splitlines()[-1] for job in stack.failed_jobs()]
    assert any("action 'echo' does not take a thread rule's threads" in reason for reason in reasons), reasons


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_kind_checks_its_own_options(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, f"""\
        action_modules = ["tests.support.echo_action"]
        [[rules."{RULE}".actions]]
        type = "echo"
        list = "  mine "
        """), Settings())
    [action] = rules.for_rule(RULE).actions
    assert (action.kind, action.key, dict(action.options)) == ("echo", f"echo:mine:{Settings().dataset}",
                                                               {"list": "mine"})

    with pytest.raises(RulesError, match=re.escape(f'rules.{RULE}.actions[0]: an echo action needs list')):
        load_rules(write(tmp_path, f"""\
            action_modules = ["tests.support.echo_action"]
            [[rules."{RULE}".actions]]
            type = "echo"
            """), Settings())
    with pytest.raises(RulesError, match=re.escape(f'rules.{RULE}.actions[0].list: must be a string, got an integer')):
        load_rules(write(tmp_path, f"""\
            action_modules = ["tests.support.echo_action"]
            [[rules."{RULE}".actions]]
            type = "echo"
            list = 3
            """), Settings())
    with pytest.raises(RulesError, match=re.escape(f'rules.{RULE}.actions[0].queue: unknown key')):
        load_rules(write(tmp_path, f"""\
            action_modules = ["tests.support.echo_action"]
            [[rules."{RULE}".actions]]
            type = "echo"
            list = "l"
            queue = "review"
            """), Settings())


def test_an_action_module_that_does_not_import_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        [default]
        dataset = "d"

        action_modules = ["no_such_package.actions"]
        """)
    # A key after a table belongs to the table: the module list must come first.
    with pytest.raises(RulesError, match=re.escape("default.action_modules: unknown key")):
        load_rules(path, Settings())
    path = write(tmp_path, """\
        action_modules = ["no_such_package.actions"]
        """)
    with pytest.raises(RulesError, match=re.escape(f"{path}:1: action_modules: module 'no_such_package.actions' "
                                                   "does not import: ModuleNotFoundError")):
        load_rules(path, Settings())


def assert_names_no_builtin_kind(source: str) -> None:
    for name in ("dataset", "annotation_queue", "jsonl"):
        assert not re.search(rf"workers\.actions\.{name}\b", source) and f'"{name}"' not in source
        assert not re.search(rf"from workers\.actions import [^\n]*\b{name}\b", source)


def test_the_slice_processor_names_no_action_kind() -> None:
    """Dispatch goes through the registry: the slice processor neither branches on a kind nor imports one."""
    source = (ROOT / "workers" / "flow" / "slices.py").read_text()
    assert ".kind" not in source
    assert_names_no_builtin_kind(source)


def test_the_thread_path_names_no_action_kind() -> None:
    """The thread path dispatches through the same registry: its only use of an action's kind
    name is the message failing a kind that does not take threads."""
    source = (ROOT / "workers" / "flow" / "threads.py").read_text()
    assert [line.strip() for line in source.splitlines() if ".kind" in line] == [
        """out[pair] = RunError(f"action {action.kind!r} does not take a thread rule's threads", transient=False)"""]
    assert_names_no_builtin_kind(source)


def test_a_kinds_thread_rows_are_its_rows_under_the_thread_key_with_the_threads_metadata() -> None:
    """What a kind that sets `threads` gets from a thread rule by default (workers/actions/base.py
    `thread_rows`): its own rows, ids from the thread's key, the pipeline's thread metadata over the
    draft's, the last turn as the source run. The dataset kind's are the examples thread rules
    have always written (ids uuid5(dataset id, "thread:<id>"[, index]))."""
    from tests.support.echo_action import Echo
    from workers.actions.dataset import Dataset, nth_example_id
    from workers.transforms import ExampleDraft

    drafts: list[ExampleDraft] = [{"inputs": {"q": 1}, "metadata": {"mine": 1, "thread_turns": 99}},
                                  {"inputs": {"q": 2}, "outputs": {"a": 2}}]
    metadata = {"thread_id": "t", "thread_turns": 2, "run_id": "last-turn"}
    rows = Dataset().thread_rows("ds-id", "thread:t", drafts, "train", metadata)
    assert rows == [
        {"id": nth_example_id("ds-id", "thread:t", 0), "inputs": {"q": 1}, "outputs": None,
         "metadata": {"mine": 1, **metadata}, "source_run_id": "last-turn", "split": "train"},
        {"id": nth_example_id("ds-id", "thread:t", 1), "inputs": {"q": 2}, "outputs": {"a": 2},
         "metadata": metadata, "source_run_id": "last-turn", "split": "train"}]
    echoed = Echo().thread_rows("ds", "thread:t", drafts, None, metadata)
    assert [row["id"] for row in echoed] == [row["id"] for row in Echo().rows("ds", "thread:t", drafts, None)]
    assert {row["source_run_id"] for row in echoed} == {"last-turn"}


def test_a_kind_of_ones_own_cannot_take_a_builtins_name() -> None:
    import workers.actions  # the built-ins' worker halves registered
    from lswh_core.actions import kind, register
    from tests.support.echo_action import Echo

    class Impostor(Echo):
        name = "dataset"

    taken = "action kind 'dataset' is taken by workers.actions.dataset.Dataset"
    with pytest.raises(ValueError, match=re.escape(taken)):
        register(Impostor())
    assert type(kind("dataset")) is workers.actions.dataset.Dataset


def test_lswh_core_imports_nothing_from_the_packages_above_it() -> None:
    """Why the rules half of an action kind lives in lswh_core/actions.py: the rules file is checked
    where the workers are not imported, and lswh_core imports no module of workers, ingress or lswh."""
    import ast

    for path in sorted((ROOT / "lswh_core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("workers", "ingress", "lswh"), f"{path.name} imports {name}"


def test_the_kind_docs_rules_md_shows_registers_and_builds_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """The example in docs/rules.md ("Actions of your own") runs as written, its module named in the
    rules file (under another kind name: tests/support/echo_action.py holds "echo" in this process)."""
    text = (ROOT / "docs" / "rules.md").read_text()
    section = text[text.index("### Actions of your own"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    module = f"doc_actions_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(code.replace('name = "echo"', 'name = "doc_echo"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    rules_path = write(tmp_path, toml.replace('"acme_actions"', f'"{module}"').replace('"echo"', '"doc_echo"'))
    [action] = load_rules(rules_path, Settings()).for_rule("3f1c6a52-7d0e-4b8a-9c41-2e5d8f7a6b10").actions
    assert (action.kind, action.key) == ("doc_echo", f"echo:acme:examples:{Settings().dataset}")
    from lswh_core.actions import kind

    rows = kind("doc_echo").rows("ds", "r1", [{"inputs": {"q": 1}}], None)  # type: ignore[union-attr]
    assert [(row["source_run_id"], row["inputs"]) for row in rows] == [("r1", {"q": 1})]
