"""Transforms: what a hydrated run becomes before it is written (the rules file's `transform`).

The contract, for built-ins and the user's own `package.module:function` alike: a transform
receives a `HydratedRun` and returns the example to write (an `ExampleDraft`), a list of them, or
None to skip the run. Keys an example leaves out keep the run's value, so `{"inputs": ...}` alone
rewrites the inputs and keeps the outputs and metadata the pipeline chose. Transforms listed
together run in order, each on what the previous one returned.

`apply_transform` is the one entry point: it runs the chain, checks what comes back, and turns
an exception inside a transform into a `TransformError` that fails that run alone, carrying the
transform's traceback with secrets (and, when the rule redacts, its PII patterns) taken out.
"""

from __future__ import annotations

import functools
import json
import re
import traceback
from collections.abc import Callable, Iterable
from typing import Any, NotRequired, Required, TypedDict

from lswh_core.redact import redact as redact_secrets
from lswh_core.rules import REDACT_BUILTINS, Selection, import_transform
from workers.errors import RunError

# Longest traceback kept in a failed job's exception text (rq-dashboard shows all of it).
MAX_TRACEBACK_CHARS = 4000


class HydratedRun(TypedDict):
    """What a transform receives: one run, hydrated, with its feedback joined."""

    id: str
    trace_id: str | None
    name: str | None
    run_type: str | None
    rule_id: str | None
    inputs: dict[str, Any]
    # What the example gets without a transform: the correction or the run's outputs, per the
    # outputs policy.
    outputs: dict[str, Any] | None
    run_outputs: dict[str, Any] | None  # the run's own outputs
    correction: dict[str, Any] | None  # the correction that won, as an outputs dict
    feedback: list[dict[str, Any]]  # this run's feedback items (key, score, value, correction, ...)
    metadata: dict[str, Any]  # the example metadata the pipeline writes (rule_id, run_id, feedback, ...)
    run: dict[str, Any]  # every field of the run as delivered or read back


class HydratedTurn(TypedDict):
    """One turn of a thread: a root run, read back through the API."""

    run_id: str
    trace_id: str | None
    name: str | None
    start_time: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None


class HydratedThread(TypedDict):
    """What a transform receives from a thread rule (`group_by` THREAD_ID): one whole thread, its
    turns in order, with the last turn's feedback joined. Like a HydratedRun it has `inputs`,
    `outputs` and `metadata` (what the example gets without a transform), so transforms that only
    touch those work on both; `turns` tells a thread apart."""

    id: str  # the thread id
    thread_id: str
    project_id: str | None
    rule_id: str | None
    turns: list[HydratedTurn]  # oldest first; the last one is the turn the example is about
    # Without a transform: {"turns": [{"inputs", "outputs"} of each earlier turn..., {"inputs"} of the
    # last]} and the last turn's outputs (or the correction, per the outputs policy).
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    run_outputs: dict[str, Any] | None  # the last turn's own outputs
    correction: dict[str, Any] | None  # the correction on the last turn's root run, as an outputs dict
    feedback: list[dict[str, Any]]  # the last turn's feedback items
    metadata: dict[str, Any]  # rule_id, thread_id, thread_turns, run_id (last turn), trace_id, feedback


class ExampleDraft(TypedDict, total=False):
    """What a transform returns (one of these, a list of them, or None)."""

    inputs: Required[dict[str, Any]]
    outputs: NotRequired[dict[str, Any] | None]
    metadata: NotRequired[dict[str, Any]]


TransformResult = ExampleDraft | list[ExampleDraft] | None
Transform = Callable[[HydratedRun], TransformResult]  # a thread rule's get a HydratedThread


class TransformError(RunError):
    """A transform failed or broke the contract: the run fails permanently (the same code on the
    same run fails the same way), so it is a RunError that is not transient. `reason` is one line
    (for `run <run id>: <reason>`); `details` is the transform's traceback, already redacted, for
    the failed job's exception text above that line."""

    def __init__(self, spec: str, reason: str, details: str = "") -> None:
        super().__init__(reason, transient=False)
        self.spec = spec
        self.details = redact_secrets(details)


def apply_transform(selection: Selection, run: HydratedRun | HydratedThread) -> list[ExampleDraft]:
    """The examples `run` becomes under `selection`'s transforms; [] means skip the run."""
    items: list[dict[str, Any]] = [dict(run)]
    for spec in selection.transforms:
        transform = _resolve(spec, selection)
        produced: list[dict[str, Any]] = []
        for item in items:
            try:
                result = transform(item)  # type: ignore[arg-type]  # an item is a run, possibly rewritten
            except Exception as exc:
                raise _failure(spec, exc, selection) from None
            # What a transform leaves out keeps the value it was given, not the original run's.
            produced.extend({**item, **draft} for draft in _drafts(spec, result))
        items = produced
    return [_example(item) for item in items]


def _resolve(spec: str, selection: Selection) -> Transform:
    if spec == "messages_to_openai":
        return messages_to_openai
    if spec == "drop_keys":
        return functools.partial(drop_keys, keys=selection.drop_keys)
    if spec == "redact":
        return functools.partial(redact, patterns=redact_patterns(selection))
    return import_transform(spec)  # type: ignore[no-any-return]  # checked when the rules file loaded


def _drafts(spec: str, result: object) -> list[dict[str, Any]]:
    if result is None:
        return []
    results: list[Any] = result if isinstance(result, list) else [result]
    for draft in results:
        if not isinstance(draft, dict):
            raise TransformError(spec, f"transform {spec} returned {type(draft).__name__}; "
                                       "it must return an example dict, a list of them, or None")
        for key, wanted, shape in (("inputs", dict, "an object"), ("outputs", (dict, type(None)), "an object or null"),
                                   ("metadata", dict, "an object")):
            if key in draft and not isinstance(draft[key], wanted):
                raise TransformError(spec, f"transform {spec} returned {key} of type {type(draft[key]).__name__}; "
                                           f"an example's {key} is {shape}")
    return results


def _example(item: dict[str, Any]) -> ExampleDraft:
    return ExampleDraft(inputs=item["inputs"], outputs=item.get("outputs"), metadata=item.get("metadata") or {})


def _failure(spec: str, exc: Exception, selection: Selection) -> TransformError:
    # Skip our own frame: the traceback starts in the transform.
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    reason = f"transform {spec} raised {type(exc).__name__}" + (f": {first}" if first else "")
    scrub = _scrubber(selection)
    return TransformError(spec, scrub(reason), scrub(text)[-MAX_TRACEBACK_CHARS:])


def _scrubber(selection: Selection) -> Callable[[str], str]:
    """Secrets always; the rule's PII patterns too when it redacts (a traceback may quote data)."""
    if "redact" not in selection.transforms:
        return redact_secrets
    patterns = redact_patterns(selection)
    return lambda text: _redact_string(redact_secrets(text), patterns)


# --- redact --------------------------------------------------------------------------------------

# Built-in patterns, by the names the rules file's redact_builtins uses. API keys first: a key may
# hold digit runs the phone pattern would take.
BUILTIN_PATTERNS: dict[str, str] = {
    "api_key": (
        r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|lsv2_(?:pt|sk)_[A-Za-z0-9_]{16,}"
        r"|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35})"
        r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{20,}=*"
    ),
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    # Grouped digits with an area part, or + and 8-15 digits; dates, versions and IPs do not match.
    "phone": (
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}(?!\w)"
        r"|(?<![\w+])\+\d{8,15}(?!\w)"
    ),
}


def redact_patterns(selection: Selection) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return _compiled(selection.redact_builtins, selection.redact_patterns)


@functools.lru_cache(maxsize=64)
def _compiled(builtins: tuple[str, ...], extra: tuple[tuple[str, str], ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    mine = dict(extra)
    ordered = [(name, mine.pop(name, BUILTIN_PATTERNS[name])) for name in BUILTIN_PATTERNS if name in builtins]
    ordered += sorted(mine.items())
    return tuple((name, re.compile(pattern)) for name, pattern in ordered)


def _redact_string(text: str, patterns: Iterable[tuple[str, re.Pattern[str]]]) -> str:
    for name, pattern in patterns:
        text = pattern.sub(f"<{name}>", text)
    return text


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    return value


def redact(run: HydratedRun, *, patterns: Iterable[tuple[str, re.Pattern[str]]] | None = None) -> ExampleDraft:
    """Every string in inputs and outputs with e-mail addresses, phone numbers and API-key-like
    strings (or the configured patterns) replaced by `<name>`."""
    if patterns is None:
        patterns = _compiled(REDACT_BUILTINS, ())
    found = tuple(patterns)
    return ExampleDraft(inputs=_map_strings(run["inputs"], lambda s: _redact_string(s, found)),
                        outputs=_map_strings(run.get("outputs"), lambda s: _redact_string(s, found)))


# --- drop_keys -----------------------------------------------------------------------------------


def _without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def drop_keys(run: HydratedRun, *, keys: Iterable[str]) -> ExampleDraft:
    """Inputs and outputs without the named keys, at any depth."""
    gone = frozenset(keys)
    return ExampleDraft(inputs=_without(run["inputs"], gone), outputs=_without(run.get("outputs"), gone))


# --- messages_to_openai --------------------------------------------------------------------------

# LangChain message types (BaseMessage.type, and the class names of the "constructor" form).
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function",
          "developer": "developer", "user": "user", "assistant": "assistant"}
_CLASS_TYPES = {"HumanMessage": "human", "AIMessage": "ai", "SystemMessage": "system", "ToolMessage": "tool",
                "FunctionMessage": "function", "ChatMessage": "chat"}


def _message_fields(value: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(LangChain type, fields) when `value` is a serialized LangChain message, in any of the
    shapes LangSmith stores: dumpd's constructor form, messages_to_dict's {type, data}, or the
    model's own dump {type, content, ...}."""
    if value.get("lc") == 1 and value.get("type") == "constructor":
        ident = value.get("id")
        if isinstance(ident, list) and ident and isinstance(ident[-1], str):
            kind = _CLASS_TYPES.get(ident[-1].removesuffix("Chunk"))
            kwargs = value.get("kwargs")
            if kind and isinstance(kwargs, dict):
                return kind, kwargs
        return None
    kind = value.get("type")
    if not isinstance(kind, str):
        return None
    kind = _CLASS_TYPES.get(kind.removesuffix("Chunk"), kind.removesuffix("Chunk").lower())
    if kind not in _CLASS_TYPES.values():
        return None
    data = value.get("data")
    if isinstance(data, dict) and "content" in data and set(value) <= {"type", "data"}:
        return kind, data
    if "content" in value:
        return kind, value
    return None


def _content(content: Any) -> Any:
    if not isinstance(content, list):
        return "" if content is None else content
    blocks = []
    for block in content:
        if isinstance(block, str):
            blocks.append({"type": "text", "text": block})
        elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call", "function_call"):
            continue  # Anthropic-style tool blocks: the message's tool_calls carry them
        else:
            blocks.append(block)
    return blocks


def _tool_calls(fields: dict[str, Any]) -> list[dict[str, Any]]:
    calls = fields.get("tool_calls")
    if isinstance(calls, list) and calls:
        return [{"type": "function", "id": call.get("id"),
                 "function": {"name": call.get("name"), "arguments": json.dumps(call.get("args") or {})}}
                for call in calls if isinstance(call, dict)]
    # Older serializations keep only the provider's own (already OpenAI-shaped) calls.
    extra = (fields.get("additional_kwargs") or {}).get("tool_calls")
    if isinstance(extra, list):
        return [{"type": "function", "id": call.get("id"), "function": call["function"]}
                for call in extra if isinstance(call, dict) and isinstance(call.get("function"), dict)]
    return []


def message_to_openai(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    role = fields.get("role", "user") if kind == "chat" else _ROLES[kind]
    if (fields.get("additional_kwargs") or {}).get("__openai_role__") == "developer":
        role = "developer"  # how LangChain keeps OpenAI's developer role on a SystemMessage
    message: dict[str, Any] = {"role": role, "content": _content(fields.get("content"))}
    if fields.get("name"):
        message["name"] = fields["name"]
    if role == "assistant":
        calls = _tool_calls(fields)
        if calls:
            message["tool_calls"] = calls
    if role == "tool":
        message["tool_call_id"] = fields.get("tool_call_id")
    return message


def _openai_role_dict(value: dict[str, Any]) -> dict[str, Any] | None:
    role = value.get("role")
    if isinstance(role, str) and role in _ROLES and "content" in value:
        return {**value, "role": _ROLES[role]}
    return None


def _convert(value: Any) -> Any:
    """Every serialized message anywhere in `value`, in OpenAI's chat format."""
    if isinstance(value, dict):
        found = _message_fields(value)
        if found:
            return message_to_openai(*found)
        role_dict = _openai_role_dict(value)
        if role_dict is not None:
            return role_dict
        return {k: _convert(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_convert(v) for v in value]
    return value


def _generation_message(generation: Any) -> dict[str, Any] | None:
    if not isinstance(generation, dict):
        return None
    message = generation.get("message")
    if isinstance(message, dict):
        converted = _convert(message)
        if isinstance(converted, dict) and "role" in converted:
            return converted
    if isinstance(generation.get("text"), str):
        return {"role": "assistant", "content": generation["text"]}
    return None


def _turn_messages(value: Any, role: str) -> list[dict[str, Any]]:
    """A turn's inputs (role "user") or outputs (role "assistant") as OpenAI messages: the messages
    they hold, else one message of that role with their one string (or their JSON)."""
    if not isinstance(value, dict) or not value:
        return []
    for key in ("messages", "message"):
        held = value.get(key)
        converted = _convert(held)
        if isinstance(converted, list) and converted and all(isinstance(m, dict) and "role" in m for m in converted):
            return converted
        if isinstance(converted, dict) and "role" in converted:
            return [converted]
    generations = value.get("generations")
    if isinstance(generations, list) and generations and isinstance(generations[0], list) and generations[0]:
        message = _generation_message(generations[0][0])
        if message:
            return [message]
    strings = [v for v in value.values() if isinstance(v, str)]
    content = strings[0] if len(value) == 1 and strings else json.dumps(value, ensure_ascii=False, default=str)
    return [{"role": role, "content": content}]


def _extend(conversation: list[dict[str, Any]], messages: list[dict[str, Any]]) -> None:
    """Chat apps often send the whole history with each turn: only what is new is appended."""
    if messages[:len(conversation)] == conversation and conversation:
        conversation.extend(messages[len(conversation):])
    else:
        conversation.extend(messages)


def thread_to_openai(thread: HydratedThread) -> ExampleDraft:
    """A whole thread as one OpenAI-format conversation: inputs {"messages": [every turn's messages
    up to the last turn's inputs]}, outputs {"message": the last answer (or the correction)}."""
    turns = thread["turns"]
    conversation: list[dict[str, Any]] = []
    for turn in turns[:-1]:
        _extend(conversation, _turn_messages(turn["inputs"], "user"))
        _extend(conversation, _turn_messages(turn["outputs"], "assistant"))
    if turns:
        _extend(conversation, _turn_messages(turns[-1]["inputs"], "user"))
    answer = _turn_messages(thread.get("outputs"), "assistant")
    return ExampleDraft(inputs={"messages": conversation}, outputs={"message": answer[-1]} if answer else None)


def messages_to_openai(run: HydratedRun) -> TransformResult:
    """LangChain messages (as LangSmith stores them) in OpenAI chat format. A chat model run
    becomes inputs {"messages": [...]} and outputs {"message": {...}}, the shape of LangSmith's
    own chat datasets; one example per prompt when the run batched several. Elsewhere every
    message found in inputs and outputs is converted in place. A thread (HydratedThread) becomes
    one conversation (thread_to_openai)."""
    if "turns" in run:
        return thread_to_openai(run)  # type: ignore[arg-type]  # a HydratedThread
    inputs, outputs = run["inputs"], run.get("outputs")
    prompts = inputs.get("messages") if isinstance(inputs, dict) else None
    generations = outputs.get("generations") if isinstance(outputs, dict) else None
    if isinstance(prompts, list) and prompts and all(isinstance(p, list) for p in prompts):
        rest = {k: _convert(v) for k, v in inputs.items() if k != "messages"}
        drafts: list[ExampleDraft] = []
        for index, prompt in enumerate(prompts):
            draft = ExampleDraft(inputs={**rest, "messages": _convert(prompt)})
            if isinstance(generations, list) and index < len(generations) and generations[index]:
                message = _generation_message(generations[index][0])
                draft["outputs"] = {"message": message} if message else _convert(outputs)
            else:
                draft["outputs"] = _convert(outputs)
            drafts.append(draft)
        return drafts[0] if len(drafts) == 1 else drafts
    if isinstance(generations, list) and generations and isinstance(generations[0], list) and generations[0]:
        message = _generation_message(generations[0][0])
        if message:
            return ExampleDraft(inputs=_convert(inputs), outputs={"message": message})
    return ExampleDraft(inputs=_convert(inputs), outputs=_convert(outputs))

