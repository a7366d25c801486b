"""Transforms: the contract (`apply_transform`) and the built-ins, on runs shaped as LangSmith
stores them (tests/fixtures/langchain_messages)."""

from __future__ import annotations

import json
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from lswh_core import rules
from lswh_core.rules import Selection, load_rules
from lswh_core.settings import Settings
from workers import transforms
from workers.errors import classify
from workers.transforms import HydratedRun, TransformError, apply_transform

FIXTURES = Path(__file__).parent / "fixtures" / "langchain_messages"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def hydrated(inputs: dict[str, Any], outputs: dict[str, Any] | None = None, **fields: Any) -> HydratedRun:
    run_id = fields.pop("id", "6ab80f10-d79c-4fa2-b441-922ed6feb630")
    return HydratedRun(id=run_id, trace_id=run_id, name="run", run_type="chain", rule_id="rule-1", inputs=inputs,
                       outputs=outputs, run_outputs=outputs, correction=None, feedback=fields.pop("feedback", []),
                       metadata=fields.pop("metadata", {"run_id": run_id}), run={"id": run_id, **fields})


def from_fixture(name: str) -> HydratedRun:
    run = fixture(name)
    return hydrated(run["inputs"], run["outputs"], id=run["id"])


def selection(**values: Any) -> Selection:
    return Selection(dataset="d", outputs="correction_or_run", **values)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A package of the user's own transforms on sys.path, as the transforms volume is."""

    def write(source: str) -> str:
        # A fresh module name each time: Python caches modules by name for the whole session.
        name = f"my_transforms_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    return write


# --- the contract ------------------------------------------------------------------------------


def test_without_a_transform_the_run_becomes_one_example_of_its_inputs_outputs_and_metadata():
    run = hydrated({"q": "hi"}, {"a": "hello"}, metadata={"run_id": "r", "rule_id": "x"})
    assert apply_transform(selection(), run) == [
        {"inputs": {"q": "hi"}, "outputs": {"a": "hello"}, "metadata": {"run_id": "r", "rule_id": "x"}}
    ]


def test_a_user_transform_sees_feedback_and_metadata_and_keys_it_leaves_out_keep_the_runs(user_module):
    module = user_module("""
        def label_from_feedback(run):
            scores = {f["key"]: f["score"] for f in run["feedback"]}
            return {"inputs": {"text": run["inputs"]["q"], "score": scores["correctness"],
                               "rule": run["metadata"]["rule_id"]}}
    """)
    run = hydrated({"q": "hi"}, {"a": "hello"}, feedback=[{"key": "correctness", "score": 0.25}],
                   metadata={"rule_id": "r1"})
    (example,) = apply_transform(selection(transforms=(f"{module}:label_from_feedback",)), run)
    assert example == {"inputs": {"text": "hi", "score": 0.25, "rule": "r1"}, "outputs": {"a": "hello"},
                       "metadata": {"rule_id": "r1"}}


def test_a_transform_returning_none_skips_the_run(user_module):
    module = user_module("def skip(run):\n    return None\n")
    assert apply_transform(selection(transforms=(f"{module}:skip",)), hydrated({"q": 1})) == []


def test_a_transform_returning_a_list_makes_one_example_each(user_module):
    module = user_module("""
        def per_turn(run):
            return [{"inputs": {"turn": t}} for t in run["inputs"]["turns"]]
    """)
    examples = apply_transform(selection(transforms=(f"{module}:per_turn",)), hydrated({"turns": ["a", "b"]}, None))
    assert [e["inputs"] for e in examples] == [{"turn": "a"}, {"turn": "b"}]


def test_transforms_listed_together_run_in_order_each_on_the_previous_result(user_module):
    module = user_module("""
        def shout(run):
            return {"inputs": {k: v.upper() for k, v in run["inputs"].items()}}
    """)
    chain = selection(transforms=(f"{module}:shout", "drop_keys"), drop_keys=("secret",))
    (example,) = apply_transform(chain, hydrated({"q": "hi", "secret": "x"}))
    assert example["inputs"] == {"q": "HI"}


def test_what_a_later_transform_leaves_out_keeps_what_the_earlier_one_returned(user_module):
    module = user_module("""
        def tag(run):
            return {"metadata": {**run["metadata"], "source": "tagged"}, "outputs": {"label": "x"}}

        def upper(run):
            return {"inputs": {"q": run["inputs"]["q"].upper()}}
    """)
    run = hydrated({"q": "hi"}, {"a": 1}, metadata={"run_id": "r"})
    (example,) = apply_transform(selection(transforms=(f"{module}:tag", f"{module}:upper")), run)
    assert example == {"inputs": {"q": "HI"}, "outputs": {"label": "x"},
                       "metadata": {"run_id": "r", "source": "tagged"}}


def test_an_exception_in_a_transform_becomes_a_transform_error_with_its_traceback(user_module):
    module = user_module("""
        def broken(run):
            return helper(run)

        def helper(run):
            raise ValueError("no label in " + str(run["inputs"]["q"]))
    """)
    with pytest.raises(TransformError) as caught:
        apply_transform(selection(transforms=(f"{module}:broken",)), hydrated({"q": "abc"}))
    error = caught.value
    assert error.reason == f"transform {module}:broken raised ValueError: no label in abc"
    assert "in helper" in error.details and f"{module}.py" in error.details
    assert "apply_transform" not in error.details  # the traceback starts in the user's code
    # The job path's classify() passes a RunError through: a permanent failure of this run alone.
    assert classify(error, "transforming") is error and error.transient is False


def test_the_transform_error_has_secrets_and_the_rules_pii_patterns_taken_out(user_module):
    module = user_module("""
        def leaky(run):
            raise RuntimeError(f"cannot reach https://api.example.com/x?token=abc123 for {run['inputs']['who']}")
    """)
    chosen = selection(transforms=(f"{module}:leaky", "redact"))
    with pytest.raises(TransformError) as caught:
        apply_transform(chosen, hydrated({"who": "jane.doe@example.com"}))
    error = caught.value
    for text in (error.reason, error.details):
        assert "abc123" not in text and "jane.doe@example.com" not in text
        assert "<email>" in text
    assert "leaky" in error.details


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("def f(run):\n    return 'text'\n", "returned str"),
        ("def f(run):\n    return {'inputs': ['a']}\n", "returned inputs of type list"),
        ("def f(run):\n    return {'inputs': {}, 'outputs': 'x'}\n", "returned outputs of type str"),
        ("def f(run):\n    return [{'inputs': {}}, 3]\n", "returned int"),
    ],
)
def test_a_transform_that_breaks_the_contract_fails_the_run_with_what_it_returned(user_module, source, problem):
    module = user_module(source)
    with pytest.raises(TransformError, match=problem):
        apply_transform(selection(transforms=(f"{module}:f",)), hydrated({"q": 1}))


def test_the_built_in_names_the_rules_file_accepts_are_the_ones_implemented():
    chosen = selection(transforms=rules.BUILTIN_TRANSFORMS, drop_keys=("x",))
    assert apply_transform(chosen, hydrated({"q": "a", "x": 1}))[0]["inputs"] == {"q": "a"}
    assert set(transforms.BUILTIN_PATTERNS) == set(rules.REDACT_BUILTINS)


# --- drop_keys ---------------------------------------------------------------------------------


def test_drop_keys_removes_the_named_keys_at_any_depth_in_inputs_and_outputs():
    run = hydrated({"api_key": "k", "a": [{"api_key": "k2", "b": 1}], "c": {"d": {"api_key": 3, "e": 4}}},
                   {"debug": {"x": 1}, "answer": "yes"})
    chosen = selection(transforms=("drop_keys",), drop_keys=("api_key", "debug"))
    (example,) = apply_transform(chosen, run)
    assert example["inputs"] == {"a": [{"b": 1}], "c": {"d": {"e": 4}}}
    assert example["outputs"] == {"answer": "yes"}


# --- redact ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+work@mail.example.co.uk today", "write to <email> today"),
        ("call +1 415 555 0100 or (415) 555-0100", "call <phone> or <phone>"),
        ("UK: +44 20 7946 0958; compact +442079460958", "UK: <phone>; compact <phone>"),
        ("key sk-proj-AbCdEfGhIjKlMnOpQrStUv and lsv2_pt_0123456789abcdef0123", "key <api_key> and <api_key>"),
        ("AWS AKIAIOSFODNN7EXAMPLE, header Bearer eyJhbGciOiJIUzI1NiJ9.abcdefghij", "AWS <api_key>, header <api_key>"),
        *[(same, same) for same in ["on 2024-01-15 at 10.0.0.1, version 1.2.3, order 40213"]],
    ],
)
def test_redact_replaces_emails_phones_and_api_keys_and_leaves_dates_ips_and_numbers(text, expected):
    (example,) = apply_transform(selection(transforms=("redact",)), hydrated({"text": text}))
    assert example["inputs"] == {"text": expected}


def test_redact_reaches_every_string_value_but_not_keys_or_numbers():
    run = hydrated({"user": {"email": "a@b.io", "phones": ["415-555-0100"], "age": 41}},
                   {"reply": "mailed a@b.io"})
    (example,) = apply_transform(selection(transforms=("redact",)), run)
    assert example["inputs"] == {"user": {"email": "<email>", "phones": ["<phone>"], "age": 41}}
    assert example["outputs"] == {"reply": "mailed <email>"}


def test_redact_patterns_come_from_the_rules_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent("""
        [default]
        transform = "redact"
        redact_builtins = ["email"]
        redact_patterns = { employee = 'EMP-\\d{6}', email = '[a-z]+@corp\\.example' }
    """))
    chosen = load_rules(path, Settings()).for_rule(None)
    (example,) = apply_transform(chosen, hydrated({"t": "EMP-123456 x@corp.example y@other.org 415-555-0100"}))
    # Only the email built-in is on, and the file's own email pattern replaced it.
    assert example["inputs"] == {"t": "<employee> <email> y@other.org 415-555-0100"}


# --- messages_to_openai ------------------------------------------------------------------------

OPENAI = selection(transforms=("messages_to_openai",))


def test_a_chat_model_run_becomes_openai_messages_in_and_the_assistant_message_with_tool_calls_out():
    (example,) = apply_transform(OPENAI, from_fixture("chat_model_constructor.json"))
    assert example["inputs"] == {"messages": [
        {"role": "system", "content": "Use the calculator for arithmetic."},
        {"role": "user", "content": "What is 25 raised to the power of 0.5?"},
    ]}
    assert example["outputs"] == {"message": {
        "role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "id": "call-7f3e",
                        "function": {"name": "calculator", "arguments": '{"expression": "25**0.5"}'}}],
    }}


def test_openai_shaped_tool_calls_in_additional_kwargs_and_tool_messages_convert():
    (example,) = apply_transform(OPENAI, from_fixture("chat_model_additional_kwargs.json"))
    assert example["inputs"]["messages"] == [
        {"role": "user", "content": "Weather in Lisbon?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "id": "call_Lx9",
             "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'}}]},
        {"role": "tool", "content": "21C, sunny", "name": "get_weather", "tool_call_id": "call_Lx9"},
    ]
    assert example["outputs"] == {"message": {"role": "assistant", "content": "It is 21C and sunny in Lisbon."}}


def test_graph_state_messages_convert_in_place_chunks_and_content_blocks_included():
    (example,) = apply_transform(OPENAI, from_fixture("graph_state_constructor.json"))
    assert example["inputs"] == {"messages": [{"role": "user", "content": "Delete the file report.pdf"}]}
    assert example["outputs"]["messages"] == [
        {"role": "user", "content": "Delete the file report.pdf"},
        {"role": "assistant", "content": [{"type": "text", "text": "Deleting it now."}], "tool_calls": [
            {"type": "function", "id": "call_d1",
             "function": {"name": "delete_file", "arguments": '{"path": "report.pdf"}'}}]},
        {"role": "tool", "content": "deleted", "name": "delete_file", "tool_call_id": "call_d1"},
        {"role": "assistant", "content": "Done: report.pdf is deleted."},
    ]


def test_type_data_dumps_and_role_dicts_convert_wherever_they_are():
    (example,) = apply_transform(OPENAI, from_fixture("history_type_data.json"))
    assert example["inputs"] == {
        "question": "And my order number?",
        "history": [{"role": "user", "content": "Hi, I ordered a lamp."},
                    {"role": "assistant", "content": "Happy to help with the lamp."}],
        "context": [{"role": "system", "content": "You are a support agent."}],
    }
    assert example["outputs"] == {"output": {"role": "assistant", "content": "It is 40213."}}


def test_a_batched_chat_model_run_becomes_one_example_per_prompt():
    run = fixture("chat_model_additional_kwargs.json")
    prompt = run["inputs"]["messages"][0][:1]
    generation = run["outputs"]["generations"][0]
    batched = hydrated({"messages": [prompt, prompt]},
                       {**run["outputs"], "generations": [generation, [{"text": "second", "message": None}]]})
    examples = apply_transform(OPENAI, batched)
    assert [e["outputs"] for e in examples] == [
        {"message": {"role": "assistant", "content": "It is 21C and sunny in Lisbon."}},
        {"message": {"role": "assistant", "content": "second"}},
    ]


def test_data_that_only_looks_like_a_message_type_is_left_alone():
    run = hydrated({"blocks": [{"type": "text", "text": "hi"}], "event": {"type": "human", "id": 3},
                    "item": {"type": "user", "content": "not a LangChain type"}})
    (example,) = apply_transform(OPENAI, run)
    assert example["inputs"] == run["inputs"]


def test_a_system_message_marked_developer_keeps_openais_developer_role():
    message = {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "SystemMessage"],
               "kwargs": {"content": "Be brief.", "type": "system",
                          "additional_kwargs": {"__openai_role__": "developer"}}}
    (example,) = apply_transform(OPENAI, hydrated({"messages": [message]}))
    assert example["inputs"] == {"messages": [{"role": "developer", "content": "Be brief."}]}


def test_messages_to_openai_then_redact_removes_pii_from_message_content():
    chosen = selection(transforms=("messages_to_openai", "redact"))
    run = hydrated({"messages": [[{"type": "human", "data": {"content": "mail me at x@y.org"}}]]},
                   {"generations": [[{"text": "ok", "message": None}]]})
    (example,) = apply_transform(chosen, run)
    assert example["inputs"] == {"messages": [{"role": "user", "content": "mail me at <email>"}]}
    assert re.fullmatch(r"ok", example["outputs"]["message"]["content"])


def test_the_docs_worked_example_redacts_pii_and_order_numbers_from_a_ticket(tmp_path):
    readme = (Path(__file__).parents[1] / "docs" / "rules.md").read_text()
    toml = readme.split("### Worked example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "rules.toml").write_text(toml)
    rule = load_rules(tmp_path / "rules.toml", Settings()).for_rule("3f1c6a52-7d0e-4b8a-9c41-2e5d8f7a6b10")
    dataset_action = rule.actions[0]
    run = hydrated({"ticket": "Order ORD-123456 never came. Reach me at ann@example.org or +1 415 555 0100."},
                   {"output": "shipping"})
    (example,) = apply_transform(dataset_action, run)
    assert example["inputs"] == {"ticket": "Order <order_number> never came. Reach me at <email> or <phone>."}
    assert example["outputs"] == {"output": "shipping"}
