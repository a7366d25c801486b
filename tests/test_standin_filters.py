"""The stand-in's subset of LangSmith's filter query language (docs "Trace query syntax")."""

from __future__ import annotations

from typing import Any

import pytest

from lswh_standin.filters import FilterError, Subject, compile_filter, has_feedback_condition, parse

RUN: dict[str, Any] = {
    "id": "r1",
    "trace_id": "r1",
    "parent_run_id": None,
    "name": "Search",
    "run_type": "tool",
    "status": "success",
    "error": None,
    "start_time": "2024-04-05T01:28:54+00:00",
    "end_time": "2024-04-05T01:29:01+00:00",
    "tags": ["production", "v2"],
    "extra": {"metadata": {"customer": "acme", "tier": "gold"}},
    "inputs": {"query": "refund policy"},
    "outputs": {"answer": "30 days"},
}
FEEDBACK = [
    {"key": "correctness", "score": 0.2, "value": None},
    {"key": "helpfulness", "score": 0.9, "value": "good"},
]


def holds(text: str, run: dict[str, Any] | None = None, feedback: list[dict[str, Any]] | None = None) -> bool:
    matcher = compile_filter(text)
    assert matcher is not None
    return matcher(Subject(run or RUN, FEEDBACK if feedback is None else feedback))


@pytest.mark.parametrize(
    "text",
    [
        'eq(name, "Search")',
        'eq(run_type, "tool")',
        'eq(status, "success")',
        'neq(run_type, "llm")',
        'has(tags, "production")',
        'in(run_type, ["tool", "llm"])',
        'gt(latency, "5s")',
        "lte(latency, 7)",
        'gte(start_time, "2024-04-05T00:00:00Z")',
        'lt(start_time, "2024-04-06T00:00:00Z")',
        "eq(error, false)",
        'and(eq(run_type, "tool"), has(tags, "v2"))',
        'or(eq(run_type, "llm"), eq(name, "Search"))',
        'not(eq(run_type, "llm"))',
        'eq(feedback_key, "correctness")',
        'and(eq(feedback_key, "correctness"), lt(feedback_score, 0.5))',
        'and(eq(metadata_key, "customer"), eq(metadata_value, "acme"))',
        'search("refund")',
    ],
)
def test_matching_filter_holds(text: str) -> None:
    assert holds(text)


@pytest.mark.parametrize(
    "text",
    [
        'eq(name, "search")',
        'eq(run_type, "llm")',
        'has(tags, "staging")',
        'gt(latency, "10s")',
        "eq(error, true)",
        'and(eq(run_type, "tool"), has(tags, "staging"))',
        'not(eq(name, "Search"))',
        'eq(feedback_key, "toxicity")',
        # one feedback item must carry both: correctness scored 0.2, helpfulness 0.9
        'and(eq(feedback_key, "correctness"), gt(feedback_score, 0.5))',
        # one metadata pair must carry both
        'and(eq(metadata_key, "customer"), eq(metadata_value, "gold"))',
        'search("nowhere")',
    ],
)
def test_non_matching_filter_does_not_hold(text: str) -> None:
    assert not holds(text)


def test_feedback_condition_holds_only_with_feedback() -> None:
    assert not holds('eq(feedback_key, "correctness")', feedback=[])


@pytest.mark.parametrize(
    "text",
    ['eq(name, "x"', 'eq(nope, "x")', 'frobnicate(name, "x")', "eq(name)", 'and(eq(name, "x"), 3)', "name", '"x"'],
)
def test_bad_filter_is_refused(text: str) -> None:
    with pytest.raises(FilterError):
        parse(text)


def test_feedback_conditions_are_found_anywhere_in_a_filter() -> None:
    assert has_feedback_condition(parse('and(eq(run_type, "llm"), or(eq(name, "a"), eq(feedback_key, "k")))'))
    assert not has_feedback_condition(parse('and(eq(run_type, "llm"), eq(metadata_key, "k"))'))


def test_empty_filter_means_no_filter() -> None:
    assert compile_filter(None) is None
    assert compile_filter("  ") is None
