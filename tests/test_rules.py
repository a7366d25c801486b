"""The rules file: every kind of mistake stops start-up naming file, line and key; a good file
resolves each rule's settings through action > rule > LSWH_RULE_DATASETS > [default] > environment."""

from __future__ import annotations

import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from lswh_core.rules import RulesError, ScoreFilter, load_rules
from lswh_core.settings import Settings, SettingsError
from tests.support.procs import ROOT, Proc, free_port, lswh, running, wait_http

RULE = "5a1f0e6c-8f1e-4c52-9d0e-3f1b2a7c9d11"
MARK = "# <- here"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def marked_line(path: Path) -> int:
    (line,) = [n for n, text in enumerate(path.read_text().splitlines(), start=1) if MARK in text]
    return line


# Each case: the file (the line the error must name carries MARK), the key it must name, and a
# fragment of the problem.
MISTAKES = {
    "syntax error": (f"""
        [rules."{RULE}"]
        dataset = "x"
        outputs = correction  {MARK}
    """, "outputs", "not valid TOML"),
    "unknown top-level key": ("""
        [default]
        dataset = "x"
        [datasets]  # <- here
        a = 1
    """, "datasets", "unknown key"),
    "unknown key in a rule": (f"""
        [rules."{RULE}"]
        dataset = "x"
        split = {{ train = 0.8, test = 0.2 }}  {MARK}
    """, f'rules.{RULE}.split', "unknown key"),
    "unknown key in an action": (f"""
        [rules."{RULE}"]
        dataset = "x"

        [[rules."{RULE}".actions]]
        type = "dataset"

        [[rules."{RULE}".actions]]
        type = "annotation_queue"
        queue = "review"
        splits = {{ train = 1.0 }}  {MARK}
    """, f"rules.{RULE}.actions[1].splits", "unknown key"),
    "unknown action": (f"""
        [[rules."{RULE}".actions]]
        type = "dataset"
        [[rules."{RULE}".actions]]
        type = "slack"  {MARK}
    """, f"rules.{RULE}.actions[1].type", "unknown action 'slack'"),
    "action without a type": (f"""
        [default]
        dataset = "x"
        [[default.actions]]  {MARK}
        directory = "/tmp"
    """, "default.actions[0]", "needs a type"),
    "transform module that does not import": (f"""
        [default]
        transform = ["redact", "no_such_package.cleaners:clean"]  {MARK}
    """, "default.transform", "does not import: ModuleNotFoundError"),
    "transform function missing from its module": (f"""
        [default]
        transform = "json:no_such_function"  {MARK}
    """, "default.transform", "json has no no_such_function"),
    "transform neither built-in nor module:function": (f"""
        [default]
        transform = "to_openai"  {MARK}
    """, "default.transform", "neither a built-in"),
    "split weight not positive": (f"""
        [rules."{RULE}"]
        splits = {{ train = 1.0, test = 0 }}  {MARK}
    """, f"rules.{RULE}.splits.test", "must be positive"),
    "split weights not summing to 1": (f"""
        [rules."{RULE}"]
        splits = {{ train = 0.8, test = 0.3 }}  {MARK}
    """, f"rules.{RULE}.splits", "sum to 1.1"),
    "split weights empty": (f"""
        [default.splits]  {MARK}
    """, "default.splits", "no split named"),
    "split weights as a table of their own, one not a number": (f"""
        [default.splits]
        train = 0.8
        test = "0.2"  {MARK}
    """, "default.splits.test", "must be a number, got a string"),
    "dataset not a string": (f"""
        [default]
        dataset = 3  {MARK}
    """, "default.dataset", "must be a string, got an integer"),
    "dedup not a boolean": (f"""
        [default]
        dedup = "yes"  {MARK}
    """, "default.dedup", "must be true or false"),
    "outputs not a known policy": (f"""
        [default]
        outputs = "corrections"  {MARK}
    """, "default.outputs", "must be one of correction_or_run, correction, run"),
    "correction_key not strings": (f"""
        [default]
        correction_key = [1, 2]  {MARK}
    """, "default.correction_key", "must be a string or an array of strings"),
    "score filter without bounds": (f"""
        [default]
        score = {{ key = "correctness" }}  {MARK}
    """, "default.score", "needs `min`, `max` or both"),
    "score filter bounds reversed": (f"""
        [default.score]  {MARK}
        key = "correctness"
        min = 0.9
        max = 0.1
    """, "default.score", "min (0.9) is above max (0.1)"),
    "annotation queue named twice over": (f"""
        [[rules."{RULE}".actions]]  {MARK}
        type = "annotation_queue"
        queue = "review"
        queue_id = "8f0a4a3c-8d6a-4d8e-9a53-4b5f3f1d2e10"
    """, f"rules.{RULE}.actions[0]", "exactly one of queue"),
    "annotation queue id not a uuid": (f"""
        [[rules."{RULE}".actions]]
        type = "annotation_queue"
        queue_id = "review"  {MARK}
    """, f"rules.{RULE}.actions[0].queue_id", "must be an annotation queue's UUID"),
    "jsonl without a directory": (f"""
        [[default.actions]]  {MARK}
        type = "jsonl"
    """, "default.actions[0]", "needs directory"),
    "the same action twice": (f"""
        [[rules."{RULE}".actions]]
        type = "dataset"
        [[rules."{RULE}".actions]]  {MARK}
        type = "dataset"
    """, f"rules.{RULE}.actions[1]", f"the same action as rules.{RULE}.actions[0]"),
    "drop_keys without the drop_keys transform": (f"""
        [default]
        transform = "redact"
        drop_keys = ["api_key"]  {MARK}
    """, "default.drop_keys", "transform does not include 'drop_keys'"),
    "drop_keys transform without keys": (f"""
        [default]
        transform = "drop_keys"  {MARK}
    """, "default.transform", "needs drop_keys"),
    "redact pattern that does not compile": (f"""
        [default]
        transform = "redact"
        redact_patterns = {{ ticket = "TCK-(\\\\d+" }}  {MARK}
    """, "default.redact_patterns.ticket", "not a valid regular expression"),
    "rule not a table": (f"""
        [rules]
        "{RULE}" = "dataset-a"  {MARK}
    """, f"rules.{RULE}", "must be a table, got a string"),
}


@pytest.mark.parametrize(("text", "key", "problem"), list(MISTAKES.values()), ids=list(MISTAKES))
def test_a_mistake_names_file_line_and_key(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as caught:
        load_rules(path, Settings())
    error = caught.value
    assert (error.file, error.line, error.key) == (str(path), marked_line(path), key)
    assert problem in str(error)
    assert str(error).startswith(f"{path}:{marked_line(path)}: {key}: ")
    assert isinstance(error, SettingsError)  # the CLI's exit-2 path


def test_a_missing_rules_file_names_the_file_and_the_variable(tmp_path):
    with pytest.raises(RulesError, match=r"nope\.toml: cannot read the rules file \(LSWH_RULES_FILE\)"):
        load_rules(tmp_path / "nope.toml", Settings())


def test_the_second_of_two_rules_with_the_same_mistake_is_found_on_its_own_line(tmp_path):
    other = str(uuid.uuid4())
    path = write(tmp_path, f"""
        [[rules."{RULE}".actions]]
        type = "dataset"

        [[rules."{other}".actions]]
        type = "dataset"
        [[rules."{other}".actions]]
        type = "dataset"
        dataset = "another"
        [[rules."{other}".actions]]
        type = "jsonl"
        directory = "/tmp/x"
        queue = "q"  {MARK}
    """)
    with pytest.raises(RulesError) as caught:
        load_rules(path, Settings())
    assert (caught.value.line, caught.value.key) == (marked_line(path), f"rules.{other}.actions[2].queue")


# --- what a good file resolves to ----------------------------------------------------------------


def test_without_a_file_the_environment_is_the_rules(tmp_path):
    env = Settings.from_env({"LSWH_DATASET": "base", "LSWH_RULE_DATASETS": f"{RULE}=routed", "LSWH_OUTPUTS": "run"})
    rules = load_rules(None, env)
    assert (rules.for_rule(RULE).dataset, rules.for_rule("other").dataset, rules.for_rule(None).outputs) == (
        "routed", "base", "run")
    (action,) = rules.for_rule(RULE).actions
    assert (action.kind, action.key, action.dataset) == ("dataset", "dataset:routed", "routed")


def test_values_come_from_the_most_specific_place_that_sets_them(tmp_path):
    routed, plain = str(uuid.uuid4()), str(uuid.uuid4())
    env = Settings.from_env({"LSWH_DATASET": "env-ds", "LSWH_OUTPUTS": "run",
                             "LSWH_RULE_DATASETS": f"{routed}=env-routed,{plain}=env-plain"})
    path = write(tmp_path, f"""
        [default]
        dataset = "file-default"
        correction_key = "label"

        [rules."{RULE}"]
        outputs = "correction"

        [[rules."{RULE}".actions]]
        type = "dataset"
        dataset = "from-action"

        [[rules."{RULE}".actions]]
        type = "jsonl"
        directory = "/data/jsonl"

        [rules."{routed}"]
        dedup = true
    """)
    rules = load_rules(path, env)
    rule = rules.for_rule(RULE)
    assert (rule.dataset, rule.outputs, rule.correction_keys) == ("file-default", "correction", ("label",))
    assert [(a.kind, a.dataset, a.outputs) for a in rule.actions] == [
        ("dataset", "from-action", "correction"), ("jsonl", "file-default", "correction")]
    # LSWH_RULE_DATASETS is more specific than [default], whether or not the file lists the rule.
    assert (rules.for_rule(routed).dataset, rules.for_rule(routed).dedup) == ("env-routed", True)
    assert rules.for_rule(plain).dataset == "env-plain"
    assert (rules.for_rule("unlisted").dataset, rules.for_rule("unlisted").outputs) == ("file-default", "run")
    assert rules.for_rule("unlisted").rule_id == "unlisted"
    assert set(rules.rule_ids) == {RULE, routed, plain}


def test_actions_in_default_reach_every_rule_and_an_action_can_lift_an_inherited_filter(tmp_path):
    path = write(tmp_path, f"""
        [default]
        score = {{ key = "correctness", max = 0.5 }}
        transform = "redact"

        [[default.actions]]
        type = "dataset"
        score = {{}}
        transform = []

        [[default.actions]]
        type = "annotation_queue"
        queue_id = "8F0A4A3C-8D6A-4D8E-9A53-4B5F3F1D2E10"

        [rules."{RULE}"]
        dataset = "mine"
    """)
    rule = load_rules(path, Settings()).for_rule(RULE)
    dataset, queue = rule.actions
    assert (dataset.dataset, dataset.score, dataset.transforms) == ("mine", None, ())
    assert queue.score == ScoreFilter(key="correctness", max=0.5)
    assert (queue.queue_id, queue.key) == ("8f0a4a3c-8d6a-4d8e-9a53-4b5f3f1d2e10",
                                           "annotation_queue:id:8f0a4a3c-8d6a-4d8e-9a53-4b5f3f1d2e10")


def test_an_action_may_switch_off_a_transform_whose_options_the_rule_sets(tmp_path):
    path = write(tmp_path, f"""
        [rules."{RULE}"]
        transform = ["redact", "drop_keys"]
        drop_keys = ["token"]
        redact_patterns = {{ ticket = 'TCK-\\d+' }}

        [[rules."{RULE}".actions]]
        type = "jsonl"
        directory = "/data"
        transform = []
    """)
    (action,) = load_rules(path, Settings()).for_rule(RULE).actions
    assert action.transforms == () and action.drop_keys == ("token",)


def test_the_docs_worked_example_resolves_to_what_the_docs_say():
    readme = (ROOT / "docs" / "rules.md").read_text()
    section = readme.split("### Worked example", 1)[1]
    toml = section.split("```toml\n", 1)[1].split("```", 1)[0]
    rule_id = "3f1c6a52-7d0e-4b8a-9c41-2e5d8f7a6b10"
    rule = load_rules(write(Path(tempfile.mkdtemp()), toml), Settings()).for_rule(rule_id)
    dataset, queue = rule.actions
    assert (dataset.kind, dataset.dataset, dataset.outputs, dataset.splits, dataset.dedup) == (
        "dataset", "ticket-classifier", "correction", (("test", 0.2), ("train", 0.8)), True)
    assert dataset.transforms == ("redact",) and dataset.correction_keys == ("label",)
    assert dict(dataset.redact_patterns) == {"order_number": r"ORD-\d{6}"}
    assert (queue.kind, queue.queue_name, queue.score) == (
        "annotation_queue", "ticket-classifier-review", ScoreFilter(key="correctness", max=0.5))


def test_splits_are_kept_in_name_order_and_a_float_sum_within_1e_9_is_one(tmp_path):
    path = write(tmp_path, """
        [default]
        splits = { train = 0.7, validation = 0.1, test = 0.2 }
    """)
    assert load_rules(path, Settings()).for_rule(None).splits == (("test", 0.2), ("train", 0.7), ("validation", 0.1))


@pytest.mark.parametrize(
    ("scores", "kept"),
    [({"correctness": 0.2}, True), ({"correctness": 0.5}, True), ({"correctness": 0.9}, False),
     ({"correctness": None}, False), ({}, False), ({"correctness": True}, False), ({"correctness": False}, True)],
)
def test_a_score_filter_keeps_runs_whose_latest_score_is_within_bounds_booleans_as_1_and_0(scores, kept):
    assert ScoreFilter(key="correctness", min=0.0, max=0.5).keeps(scores) is kept


def test_a_correction_key_limits_which_feedback_keys_corrections_come_from(tmp_path):
    path = write(tmp_path, f"""
        [rules."{RULE}"]
        correction_key = ["label", "category"]
    """)
    rules = load_rules(path, Settings())
    assert [rules.for_rule(RULE).takes_correction_from(k) for k in ("label", "category", "note")] == [True, True, False]
    assert rules.for_rule("other").takes_correction_from("note")  # no correction_key: any key


def test_each_action_admits_runs_by_its_own_filters(tmp_path):
    path = write(tmp_path, f"""
        [[rules."{RULE}".actions]]
        type = "dataset"
        outputs = "correction"

        [[rules."{RULE}".actions]]
        type = "annotation_queue"
        queue = "review"
        score = {{ key = "correctness", max = 0.5 }}
    """)
    dataset, queue = load_rules(path, Settings()).for_rule(RULE).actions
    runs = {"corrected, high": (True, {"correctness": 0.9}), "corrected, low": (True, {"correctness": 0.1}),
            "uncorrected, low": (False, {"correctness": 0.1}), "uncorrected, unscored": (False, {})}
    admitted = {name: [a.kind for a in (dataset, queue) if a.admits(has_correction=c, latest_scores=s)]
                for name, (c, s) in runs.items()}
    assert admitted == {"corrected, high": ["dataset"], "corrected, low": ["dataset", "annotation_queue"],
                        "uncorrected, low": ["annotation_queue"], "uncorrected, unscored": []}


def test_the_shipped_example_file_loads(monkeypatch):
    rules = load_rules(ROOT / "deploy" / "rules.example.toml", Settings())
    assert rules.by_rule  # it shows at least one rule


def test_a_user_transform_on_the_path_loads(tmp_path, monkeypatch):
    name = f"my_transforms_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def to_example(run):\n    return {'inputs': run['inputs']}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, f'[default]\ntransform = "{name}:to_example"\n')
    assert load_rules(path, Settings()).for_rule(None).transforms == (f"{name}:to_example",)


# --- the processes stop at start -----------------------------------------------------------------


def exit_code(proc: Proc, timeout: float = 60.0) -> int:
    code = proc.popen.wait(timeout)
    proc.stop()
    return code


def test_lswh_ingress_with_an_unknown_action_exits_2_naming_file_line_and_key(tmp_path):
    path = write(tmp_path, MISTAKES["unknown action"][0])
    proc = lswh("ingress", "--port", str(free_port()), env={"LSWH_SECRETS": "s3cret", "LSWH_RULES_FILE": str(path)})
    assert exit_code(proc) == 2
    assert f"lswh ingress: {path}:{marked_line(path)}: rules.{RULE}.actions[1].type: unknown action" in proc.output()
    assert "Traceback" not in proc.output()


def test_lswh_worker_with_a_transform_that_does_not_import_exits_2(tmp_path):
    path = write(tmp_path, MISTAKES["transform module that does not import"][0])
    # No Redis and no LangSmith here: the rules file is checked before either is reached.
    proc = lswh("worker", "--burst", env={"LSWH_RULES_FILE": str(path), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert exit_code(proc) == 2
    assert f"lswh worker: {path}:{marked_line(path)}: default.transform: transform 'no_such_package" in proc.output()
    assert "Traceback" not in proc.output()


def test_lswh_dev_with_bad_split_weights_exits_2_before_starting_anything(tmp_path):
    path = write(tmp_path, MISTAKES["split weights not summing to 1"][0])
    proc = lswh("dev", "--port", str(free_port()), "--dashboard-port", str(free_port()),
                env={"LSWH_RULES_FILE": str(path)})
    assert exit_code(proc) == 2
    assert f"lswh dev: {path}:{marked_line(path)}: rules.{RULE}.splits: bad split weights" in proc.output()
    assert "Webhook URL" not in proc.output()


def test_lswh_ingress_starts_with_a_good_rules_file_and_the_users_transforms_on_pythonpath(tmp_path):
    transforms = tmp_path / "transforms"
    transforms.mkdir()
    (transforms / "acme_transforms.py").write_text("def label(run):\n    return {'inputs': run['inputs']}\n")
    path = write(tmp_path, f"""
        [rules."{RULE}"]
        transform = ["acme_transforms:label", "redact"]
    """)
    port = free_port()
    env = {"LSWH_SECRETS": "s3cret", "LSWH_RULES_FILE": str(path), "PYTHONPATH": str(transforms)}
    with running(lswh("ingress", "--port", str(port), env=env)) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
