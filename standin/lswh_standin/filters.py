"""A subset of LangSmith's filter query language, parsed and evaluated against stored runs.

Source: docs "Trace query syntax" (https://docs.langchain.com/langsmith/trace-query-syntax), which the
SDK's `runs.query_v2` docstring points to for `filter`, `trace_filter` and `tree_filter`. Modelled:
comparators `eq, neq, gt, gte, lt, lte, has, search, in`, logic `and, or, not`; fields `id, name,
run_type, status, error, start_time, end_time, latency, tags, trace_id, is_root, metadata_key,
metadata_value, feedback_key, feedback_score, feedback_value`. As in the docs' examples
(`and(eq(feedback_key, "correctness"), gt(feedback_score, 0.5))`), feedback conditions inside one `and`
must hold for the same feedback item, and metadata_key / metadata_value conditions for the same
key-value pair.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

COMPARATORS = {"eq", "neq", "gt", "gte", "lt", "lte", "has", "search", "in"}
LOGIC = {"and", "or", "not"}
FEEDBACK_FIELDS = {"feedback_key", "feedback_score", "feedback_value"}
METADATA_FIELDS = {"metadata_key", "metadata_value"}
RUN_FIELDS = {"id", "name", "run_type", "status", "error", "start_time", "end_time", "latency", "tags",
              "trace_id", "is_root"}


class FilterError(ValueError):
    """A filter string the query language does not accept."""


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Field:
    name: str


_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<num>-?\d+(?:\.\d+)?(?![\w.]))"""
    r"""|(?P<word>[A-Za-z_][\w.]*)|(?P<punct>[(),\[\]]))"""
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"unexpected character at {pos}: {text[pos:pos + 10]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def parse(text: str) -> Call:
    tokens = _tokens(text)
    node, rest = _expr(tokens, 0)
    if rest != len(tokens):
        raise FilterError("trailing input after the expression")
    if not isinstance(node, Call):
        raise FilterError("a filter must be a call such as eq(name, \"x\")")
    return node


def _expr(tokens: list[tuple[str, str]], i: int) -> tuple[Any, int]:
    if i >= len(tokens):
        raise FilterError("unexpected end of filter")
    kind, value = tokens[i]
    if kind == "str":
        return json.loads(value) if value[0] == '"' else value[1:-1], i + 1
    if kind == "num":
        return (float(value) if "." in value else int(value)), i + 1
    if kind == "punct" and value == "[":
        items: list[Any] = []
        i += 1
        while tokens[i:i + 1] != [("punct", "]")]:
            item, i = _expr(tokens, i)
            items.append(item)
            if tokens[i:i + 1] == [("punct", ",")]:
                i += 1
        return items, i + 1
    if kind == "word":
        if tokens[i + 1:i + 2] == [("punct", "(")]:
            return _call(value.lower(), tokens, i + 2)
        if value in ("true", "false"):
            return value == "true", i + 1
        if value == "null":
            return None, i + 1
        return Field(value), i + 1
    raise FilterError(f"unexpected {value!r}")


def _call(name: str, tokens: list[tuple[str, str]], i: int) -> tuple[Call, int]:
    if name not in COMPARATORS | LOGIC:
        raise FilterError(f"unknown function {name!r}")
    args: list[Any] = []
    while tokens[i:i + 1] != [("punct", ")")]:
        if i >= len(tokens):
            raise FilterError(f"unclosed {name}(")
        arg, i = _expr(tokens, i)
        args.append(arg)
        if tokens[i:i + 1] == [("punct", ",")]:
            i += 1
    call = Call(name, tuple(args))
    _check(call)
    return call, i + 1


def _check(call: Call) -> None:
    if call.name in LOGIC:
        if not call.args or not all(isinstance(a, Call) for a in call.args):
            raise FilterError(f"{call.name}() takes filter expressions")
        if call.name == "not" and len(call.args) != 1:
            raise FilterError("not() takes one expression")
        return
    if call.name == "search" and len(call.args) == 1:
        return
    if len(call.args) != 2 or not isinstance(call.args[0], Field):
        raise FilterError(f"{call.name}() takes a field and a value")
    field = call.args[0].name
    if field not in RUN_FIELDS | FEEDBACK_FIELDS | METADATA_FIELDS and not field.startswith("metadata."):
        raise FilterError(f"unknown field {field!r}")


def fields(node: Call) -> Iterable[str]:
    """Every field a filter names."""
    for arg in node.args:
        if isinstance(arg, Field):
            yield arg.name
        elif isinstance(arg, Call):
            yield from fields(arg)


def has_feedback_condition(node: Call) -> bool:
    return any(f in FEEDBACK_FIELDS for f in fields(node))


# --- evaluation -----------------------------------------------------------------------------------


@dataclass
class Subject:
    """What a filter is evaluated against: a run, its feedback, and how to tell times apart."""

    run: dict[str, Any]
    feedback: list[dict[str, Any]]


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value)
        if match:
            scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
            return float(match.group(1)) * scale
    return None


def _compare(op: str, actual: Any, wanted: Any) -> bool:
    if op == "in":
        return isinstance(wanted, list) and any(_compare("eq", actual, w) for w in wanted)
    if op == "has":
        return isinstance(actual, list) and wanted in actual
    if op == "search":
        return isinstance(actual, str) and str(wanted).lower() in actual.lower()
    if isinstance(actual, str) and isinstance(wanted, str) and op in ("eq", "neq"):
        same = actual.lower() == wanted.lower() if actual.upper() in ("SUCCESS", "ERROR", "PENDING") else (
            actual == wanted)
        return same if op == "eq" else not same
    if op == "eq":
        return bool(actual == wanted)
    if op == "neq":
        return bool(actual != wanted)
    if actual is None or wanted is None:
        return False
    try:
        ordered = {"gt": actual > wanted, "gte": actual >= wanted, "lt": actual < wanted, "lte": actual <= wanted}
        return bool(ordered[op])
    except TypeError:
        return False


def _run_value(run: dict[str, Any], field: str) -> Any:
    if field in ("start_time", "end_time"):
        return _time(run.get(field))
    if field == "latency":
        start, end = _time(run.get("start_time")), _time(run.get("end_time"))
        return (end - start).total_seconds() if start and end else None
    if field == "is_root":
        return not run.get("parent_run_id") and str(run.get("trace_id")) == str(run.get("id"))
    if field == "tags":
        return run.get("tags") or []
    if field.startswith("metadata."):
        return ((run.get("extra") or {}).get("metadata") or {}).get(field.removeprefix("metadata."))
    return run.get(field)


def _wanted(field: str, value: Any) -> Any:
    if field in ("start_time", "end_time"):
        return _time(value)
    if field == "latency":
        return _seconds(value)
    return value


def _leaf(call: Call, run: dict[str, Any]) -> bool:
    if call.name == "search":
        text = json.dumps([run.get("inputs"), run.get("outputs"), run.get("error")], default=str)
        return _compare("search", text, call.args[-1])
    field = call.args[0].name
    if field == "error" and isinstance(call.args[1], bool):
        return bool(run.get("error")) == call.args[1] if call.name == "eq" else bool(run.get("error")) != call.args[1]
    return _compare(call.name, _run_value(run, field), _wanted(field, call.args[1]))


def _item_leaf(call: Call, item: dict[str, Any]) -> bool:
    field = call.args[0].name
    return _compare(call.name, item.get(field.split("_", 1)[1]), call.args[1])


def _group(call: Call) -> str:
    if call.name in LOGIC or not call.args or not isinstance(call.args[0], Field):
        return "run"
    name = call.args[0].name
    return "feedback" if name in FEEDBACK_FIELDS else "metadata" if name in METADATA_FIELDS else "run"


def _items(subject: Subject, group: str) -> list[dict[str, Any]]:
    if group == "feedback":
        return subject.feedback
    metadata = (subject.run.get("extra") or {}).get("metadata") or {}
    return [{"key": k, "value": v} for k, v in metadata.items()]


def matches(node: Call, subject: Subject) -> bool:
    if node.name == "not":
        return not matches(node.args[0], subject)
    if node.name == "or":
        return any(matches(a, subject) for a in node.args)
    if node.name == "and":
        groups: dict[str, list[Call]] = {}
        for arg in node.args:
            groups.setdefault(_group(arg), []).append(arg)
        if not all(matches(a, subject) for a in groups.get("run", [])):
            return False
        return all(
            any(all(_item_leaf(c, item) for c in conds) for item in _items(subject, group))
            for group, conds in groups.items()
            if group != "run"
        )
    group = _group(node)
    if group == "run":
        return _leaf(node, subject.run)
    return any(_item_leaf(node, item) for item in _items(subject, group))


Matcher = Callable[[Subject], bool]


def compile_filter(text: str | None) -> Matcher | None:
    """A predicate for `text`, or None when there is no filter; raises FilterError on bad syntax."""
    if text is None or not text.strip():
        return None
    node = parse(text)
    return lambda subject: matches(node, subject)
