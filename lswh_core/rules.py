"""The rules file (`LSWH_RULES_FILE`): what each LangSmith rule's runs become, and where they go.

TOML, read with the standard library's `tomllib`. A `[default]` table and one `[rules."<rule_id>"]`
table per rule hold the same keys; each rule's `[[rules."<rule_id>".actions]]` says where its runs
go. A value is looked up from the most specific place that sets it:

    action table  >  rule table  >  LSWH_RULE_DATASETS (dataset)  >  [default]  >  LSWH_DATASET / LSWH_OUTPUTS

so the environment variables keep working unchanged and are the defaults of everything here.

An action's `type` names a kind in the registry of lswh_core/actions.py, which says which keys of
its own the action takes, how each is checked and how the action's key is derived; a top-level
`action_modules = ["package.module", ...]` names modules imported first, which register kinds of
their own (the decision is in that module's docstring).

Every mistake is found at start-up, never at run time: `load_rules` raises `RulesError` naming the
file, the line and the key. `tomllib` gives lines only for syntax errors, so `_Locator` scans the
text for the table headers and keys itself (the same grammar `tomllib` parsed, one line at a time).
"""

from __future__ import annotations

import importlib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lswh_core import actions as action_kinds
from lswh_core.actions import ActionError, ActionKind, type_name
from lswh_core.settings import OUTPUT_MODES, Settings, SettingsError

# The names workers/transforms.py implements (a test keeps the two in step): the rules file is
# checked in processes that never import the workers.
BUILTIN_TRANSFORMS = ("messages_to_openai", "drop_keys", "redact")
REDACT_BUILTINS = ("email", "phone", "api_key")
SPLIT_SUM_TOLERANCE = 1e-9

# What a run must pass and what its example looks like; set in any table, inherited downwards.
_FILTER_KEYS = ("outputs", "correction_key", "score")
_EXAMPLE_KEYS = ("dataset", "transform", "drop_keys", "redact_patterns", "redact_builtins", "splits", "dedup")
_RULE_KEYS = frozenset((*_FILTER_KEYS, *_EXAMPLE_KEYS, "actions"))
_TOP_KEYS = frozenset(("default", "rules", "action_modules"))


def _action_keys(kind: ActionKind) -> frozenset[str]:
    """An action that receives the run itself takes no example-shaping keys: they would be
    ignored, so they are refused instead."""
    shaping = _EXAMPLE_KEYS if kind.takes == "examples" else ()
    return frozenset(("type", *_FILTER_KEYS, *shaping, *kind.options))

_SCORE_KEYS = frozenset(("key", "min", "max"))

Path_ = tuple[str | int, ...]


class RulesError(SettingsError):
    """A mistake in the rules file. The message reads `FILE:LINE: KEY: what is wrong`."""

    def __init__(self, file: str, line: int | None, key: str | None, problem: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


@dataclass(frozen=True)
class ScoreFilter:
    """Keep a run only if feedback key `key`'s latest score lies within [min, max] (either bound
    may be open); a boolean score counts as 1 or 0. A run without a score for `key` is not kept:
    reconciliation sees a score that arrives after the delivery and evaluates the filter again."""

    key: str
    min: float | None = None
    max: float | None = None

    def keeps(self, latest_scores: Mapping[str, float | int | bool | None]) -> bool:
        score = latest_scores.get(self.key)
        if score is None:
            return False
        value = float(score)
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which runs pass and what their example looks like, resolved through every layer."""

    dataset: str
    outputs: str
    # Feedback keys a correction may come from; None = any key.
    correction_keys: tuple[str, ...] | None = None
    score: ScoreFilter | None = None
    # (split name, weight) sorted by name, weights summing to 1; None = no split.
    splits: tuple[tuple[str, float], ...] | None = None
    # Applied in order: built-in names or "package.module:function".
    transforms: tuple[str, ...] = ()
    drop_keys: tuple[str, ...] = ()
    redact_builtins: tuple[str, ...] = REDACT_BUILTINS
    # (name, regular expression) added to the built-ins; a built-in's name replaces it.
    redact_patterns: tuple[tuple[str, str], ...] = ()
    dedup: bool = False

    def takes_correction_from(self, feedback_key: str) -> bool:
        return self.correction_keys is None or feedback_key in self.correction_keys

    def admits(self, *, has_correction: bool, latest_scores: Mapping[str, float | int | bool | None]) -> bool:
        """Whether a run passes this selection's filters: `outputs = "correction"` wants a
        correction (from `correction_keys`), `score` a latest score within bounds."""
        if self.outputs == "correction" and not has_correction:
            return False
        return self.score is None or self.score.keeps(latest_scores)


@dataclass(frozen=True, kw_only=True)
class Action(Selection):
    """One place a rule's runs go. `key` is unique within the rule: record (key, run) as done so a
    failed action is retried alone."""

    kind: str  # a name in the registry of lswh_core/actions.py
    key: str
    # The kind's own keys set in the action table, checked by the kind (ActionKind.options).
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def queue_name(self) -> str | None:
        """annotation_queue: the queue by name ..."""
        return self.options.get("queue")

    @property
    def queue_id(self) -> str | None:
        """... or by id."""
        return self.options.get("queue_id")

    @property
    def directory(self) -> str | None:
        """jsonl: the files' directory."""
        return self.options.get("directory")


@dataclass(frozen=True, kw_only=True)
class RuleSettings(Selection):
    """Everything one rule's runs get: the rule-level selection and its actions (each already
    carrying the values it inherits)."""

    rule_id: str | None
    actions: tuple[Action, ...] = field(default=())


@dataclass(frozen=True)
class Rules:
    path: str | None
    default: RuleSettings
    by_rule: Mapping[str, RuleSettings]

    def for_rule(self, rule_id: str | None) -> RuleSettings:
        if rule_id is not None and rule_id in self.by_rule:
            return self.by_rule[rule_id]
        return replace(self.default, rule_id=rule_id)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Rules named in the file or in LSWH_RULE_DATASETS (reconciliation backfills these)."""
        return tuple(self.by_rule)


def load_rules(path: str | Path | None, settings: Settings | None = None) -> Rules:
    """Read and check the rules file; `path=None` gives the rules the environment alone implies.
    Raises RulesError (a SettingsError: the CLI exits 2 with its message)."""
    settings = Settings.from_env() if settings is None else settings
    if path is None:
        return _Resolver(settings, {}, _Locator(""), "<environment>").rules(None)
    name = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(name, None, None, f"cannot read the rules file (LSWH_RULES_FILE): {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line_match = re.search(r"at line (\d+)", str(exc))
        line = int(line_match.group(1)) if line_match else None
        key = _key_on_line(text, line) if line else None
        raise RulesError(name, line, key, f"not valid TOML: {exc}") from None
    return _Resolver(settings, document, _Locator(text), name).rules(name)


# --- locating keys in the text -----------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)(.*?)(\]\]?)\s*(?:#.*)?$")
_SIMPLE_KEY = r"(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
_KEY_LINE = re.compile(rf"^\s*({_SIMPLE_KEY}(?:\s*\.\s*{_SIMPLE_KEY})*)\s*=")


def _parse_key_path(dotted: str) -> tuple[str, ...] | None:
    """The keys of a (possibly dotted, possibly quoted) TOML key, parsed by tomllib itself."""
    try:
        node: Any = tomllib.loads(f"{dotted} = 0")
    except tomllib.TOMLDecodeError:
        return None
    keys: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        (k, node), = node.items()
        keys.append(k)
    return tuple(keys)


def _key_on_line(text: str, line: int) -> str | None:
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    match = _KEY_LINE.match(lines[line - 1])
    keys = _parse_key_path(match.group(1)) if match else None
    return ".".join(keys) if keys else None


class _Locator:
    """Line numbers of table headers and keys, by their path in the parsed document (array-of-
    tables elements by index). A path not written out (inside an inline table) is found at its
    nearest written-out ancestor."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Path_, int] = {}
        arrays: dict[tuple[str, ...], int] = {}
        current: Path_ = ()
        in_string: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            if in_string is not None:
                if raw.count(in_string) % 2 == 1:
                    in_string = None
                continue
            header = _HEADER.match(raw)
            keys = _parse_key_path(header.group(2)) if header and len(header.group(1)) == len(header.group(3)) else None
            if header and keys:
                current = self._expand(keys, arrays)
                if header.group(1) == "[[":
                    arrays[keys] = arrays.get(keys, 0) + 1
                    current = (*self._expand(keys[:-1], arrays), keys[-1], arrays[keys] - 1)
                self._mark(current, number)
                continue
            match = _KEY_LINE.match(raw)
            key_path = _parse_key_path(match.group(1)) if match else None
            if key_path:
                self._mark((*current, *key_path), number)
                for quote in ('"""', "'''"):
                    if raw.count(quote) % 2 == 1:
                        in_string = quote

    @staticmethod
    def _expand(keys: tuple[str, ...], arrays: Mapping[tuple[str, ...], int]) -> Path_:
        """`[a.b.c]` under `[[a.b]]` means a.b[last].c."""
        path: list[str | int] = []
        for i, key in enumerate(keys):
            path.append(key)
            count = arrays.get(keys[: i + 1])
            if count and i < len(keys) - 1:
                path.append(count - 1)
        return tuple(path)

    def _mark(self, path: Path_, line: int) -> None:
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], line)

    def line_of(self, path: Path_) -> int | None:
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def key_name(path: Path_) -> str:
    """rules."abc-1".actions[0].type: how the path is written in TOML."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            bare = re.fullmatch(r"[A-Za-z0-9_-]+", part) is not None
            out += ("." if out else "") + (part if bare else '"' + part.replace('"', '\\"') + '"')
    return out


# --- checking and resolving --------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_type_name = type_name


class _Resolver:
    def __init__(self, settings: Settings, document: Mapping[str, Any], locator: _Locator, file: str) -> None:
        self.settings = settings
        self.document = document
        self.locator = locator
        self.file = file

    def error(self, path: Path_, problem: str) -> RulesError:
        return RulesError(self.file, self.locator.line_of(path), key_name(path), problem)

    def rules(self, path: str | None) -> Rules:
        unknown = set(self.document) - _TOP_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise self.error((key,), 'unknown key: the rules file has [default] and [rules."<rule_id>"] tables'
                             " (and action_modules)")
        self._import_action_modules(self.document.get("action_modules", []))
        default_table = self._table(("default",), self.document.get("default", {}))
        rules_table = self._table(("rules",), self.document.get("rules", {}))
        base: dict[str, tuple[Any, Path_]] = {
            "dataset": (self.settings.dataset, ()),
            "outputs": (self.settings.outputs, ()),
        }
        default_layer = self._layer(("default",), default_table, _RULE_KEYS)
        default = self._resolve(None, {**base, **default_layer}, ("default",))
        by_rule: dict[str, RuleSettings] = {}
        for rule_id, dataset in self.settings.rule_datasets.items():
            by_rule[rule_id] = self._resolve(rule_id, {**base, **default_layer, "dataset": (dataset, ())}, ("default",))
        for rule_id, table in rules_table.items():
            where: Path_ = ("rules", rule_id)
            table = self._table(where, table)
            layered = {**base, **default_layer}
            # LSWH_RULE_DATASETS names this rule's dataset more specifically than [default] does.
            if rule_id in self.settings.rule_datasets:
                layered["dataset"] = (self.settings.rule_datasets[rule_id], ())
            by_rule[rule_id] = self._resolve(rule_id, {**layered, **self._layer(where, table, _RULE_KEYS)}, where)
        return Rules(path=path, default=default, by_rule=by_rule)

    def _import_action_modules(self, value: object) -> None:
        """Import the modules named (each registers its kinds as it is imported)."""
        path: Path_ = ("action_modules",)
        names = self._strings(value, path, allow_single=False)
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as exc:  # the user's module may raise anything while importing
                raise self.error(path, f"module {name!r} does not import: {type(exc).__name__}: {exc} "
                                       "(is its directory on PYTHONPATH?)") from None

    def _table(self, path: Path_, value: object) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a table, got {_type_name(value)}")
        return value

    def _layer(self, where: Path_, table: Mapping[str, Any], allowed: frozenset[str],
               kind: ActionKind | None = None) -> dict[str, tuple[Any, Path_]]:
        """The table's keys, each checked for its type (an action's own keys by its kind), with
        where it was set."""
        layer: dict[str, tuple[Any, Path_]] = {}
        for key, value in table.items():
            path = (*where, key)
            if key not in allowed:
                raise self.error(path, f"unknown key (known here: {', '.join(sorted(allowed))})")
            if kind is not None and key in kind.options:
                try:
                    layer[key] = (kind.check(key, value), path)
                except ActionError as exc:
                    raise self.error(path, str(exc)) from None
            else:
                layer[key] = (self._check(key, value, path), path)
        return layer

    def _check(self, key: str, value: Any, path: Path_) -> Any:
        if key == "dataset":
            return self._string(value, path)
        if key == "outputs":
            if value not in OUTPUT_MODES:
                raise self.error(path, f"must be one of {', '.join(OUTPUT_MODES)}, got {value!r}")
            return value
        if key == "correction_key":
            keys = self._strings(value, path, allow_single=True)
            if not keys:
                raise self.error(path, "needs at least one feedback key")
            return keys
        if key == "score":
            return self._score(value, path)
        if key == "splits":
            return self._splits(value, path)
        if key == "transform":
            specs = self._strings(value, path, allow_single=True)
            for spec in specs:
                problem = transform_problem(spec)
                if problem:
                    raise self.error(path, problem)
            return specs
        if key == "drop_keys":
            keys = self._strings(value, path, allow_single=False)
            if not keys:
                raise self.error(path, "needs at least one key to drop")
            return keys
        if key == "redact_builtins":
            names = self._strings(value, path, allow_single=False)
            for name in names:
                if name not in REDACT_BUILTINS:
                    raise self.error(path, f"unknown built-in pattern {name!r} (known: {', '.join(REDACT_BUILTINS)})")
            return names
        if key == "redact_patterns":
            return self._patterns(value, path)
        if key == "dedup":
            if not isinstance(value, bool):
                raise self.error(path, f"must be true or false, got {_type_name(value)}")
            return value
        if key == "actions":
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise self.error(path, 'must be an array of tables: [[rules."<rule_id>".actions]] with a type')
            if not value:
                raise self.error(path, "needs at least one action (leave it out for the dataset action)")
            return value
        if key == "type":
            if not isinstance(value, str) or action_kinds.kind(value) is None:
                raise self.error(path, f"unknown action {value!r} (known: {', '.join(action_kinds.kind_names())})")
            return value
        raise AssertionError(f"unchecked key {key}")  # every allowed key has a branch above

    def _string(self, value: Any, path: Path_) -> str:
        if not isinstance(value, str):
            raise self.error(path, f"must be a string, got {_type_name(value)}")
        if not value.strip():
            raise self.error(path, "must not be empty")
        return value.strip()

    def _strings(self, value: Any, path: Path_, *, allow_single: bool) -> tuple[str, ...]:
        if allow_single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            shape = "a string or an array of strings" if allow_single else "an array of strings"
            raise self.error(path, f"must be {shape} (none empty), got {_type_name(value)}")
        return tuple(v.strip() for v in value)

    def _score(self, value: Any, path: Path_) -> ScoreFilter | None:
        if not isinstance(value, dict):
            example = '{ key = "correctness", max = 0.5 }'
            raise self.error(path, f"must be a table like {example}, got {_type_name(value)}")
        if not value:
            return None  # `score = {}` lifts a filter set further up
        for k, v in value.items():
            if k not in _SCORE_KEYS:
                raise self.error((*path, k), "unknown key (known here: key, max, min)")
            if k in ("min", "max") and not _is_number(v):
                raise self.error((*path, k), f"must be a finite number, got {_type_name(v)}")
        if "key" not in value:
            raise self.error(path, "needs `key`, the feedback key whose latest score is compared")
        key = self._string(value["key"], (*path, "key"))
        low, high = value.get("min"), value.get("max")
        if low is None and high is None:
            raise self.error(path, "needs `min`, `max` or both")
        if low is not None and high is not None and low > high:
            raise self.error(path, f"min ({low}) is above max ({high})")
        return ScoreFilter(key=key, min=None if low is None else float(low), max=None if high is None else float(high))

    def _splits(self, value: Any, path: Path_) -> tuple[tuple[str, float], ...]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a table like {{ train = 0.8, test = 0.2 }}, got {_type_name(value)}")
        if not value:
            raise self.error(path, "bad split weights: no split named")
        for name, weight in value.items():
            if not name.strip():
                raise self.error(path, "bad split weights: a split name is empty")
            if not _is_number(weight):
                raise self.error((*path, name), f"bad split weight: must be a number, got {_type_name(weight)}")
            if weight <= 0:
                raise self.error((*path, name), f"bad split weight: must be positive, got {weight}")
        total = math.fsum(value.values())
        if abs(total - 1.0) > SPLIT_SUM_TOLERANCE:
            raise self.error(path, f"bad split weights: they sum to {total!r}, not 1")
        return tuple(sorted((name, float(weight)) for name, weight in value.items()))

    def _patterns(self, value: Any, path: Path_) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict) or not value:
            raise self.error(path, 'must be a table of named regular expressions, like { ticket = "TCK-\\\\d+" }')
        for name, pattern in value.items():
            if not isinstance(pattern, str) or not pattern:
                raise self.error((*path, name), f"must be a non-empty regular expression, got {_type_name(pattern)}")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise self.error((*path, name), f"not a valid regular expression: {exc}") from None
        return tuple(sorted(value.items()))

    def _resolve(self, rule_id: str | None, layered: Mapping[str, tuple[Any, Path_]], where: Path_) -> RuleSettings:
        selection = self._selection(layered)
        raw_actions, actions_path = layered.get("actions", ([{"type": "dataset"}], where))
        actions: list[Action] = []
        seen: dict[str, Path_] = {}
        for index, table in enumerate(raw_actions):
            at: Path_ = (*actions_path, index)
            if "type" not in table:
                raise self.error(at, f"an action needs a type ({', '.join(action_kinds.kind_names())})")
            kind = action_kinds.kind(self._check("type", table["type"], (*at, "type")))
            assert kind is not None  # checked just above
            own = self._layer(at, table, _action_keys(kind), kind)
            own.pop("type")
            merged = {**layered, **own}
            merged.pop("actions", None)
            # An action that switches a transform off (`transform = []`) leaves the rule's options
            # for it unused, which is no mistake; options set in the action itself are checked.
            own_options = bool(own.keys() & {"drop_keys", "redact_patterns", "redact_builtins"})
            action = self._action(kind, merged, at, check_options=own_options)
            if action.key in seen:
                raise self.error(at, f"the same action as {key_name(seen[action.key])} ({action.key})")
            seen[action.key] = at
            actions.append(action)
        return RuleSettings(rule_id=rule_id, actions=tuple(actions), **selection)

    def _selection(self, layered: Mapping[str, tuple[Any, Path_]], *, check_options: bool = True) -> dict[str, Any]:
        def value(key: str, default: Any = None) -> Any:
            return layered[key][0] if key in layered else default

        transforms = value("transform", ())
        for option, needs in (("drop_keys", "drop_keys"), ("redact_patterns", "redact"), ("redact_builtins", "redact")):
            if check_options and option in layered and needs not in transforms:
                raise self.error(layered[option][1], f"set, but transform does not include {needs!r}")
        if "drop_keys" in transforms and "drop_keys" not in layered:
            raise self.error(layered["transform"][1], "the drop_keys transform needs drop_keys = [\"key\", ...]")
        return {
            "dataset": value("dataset"),
            "outputs": value("outputs"),
            "correction_keys": value("correction_key"),
            "score": value("score"),
            "splits": value("splits"),
            "transforms": transforms,
            "drop_keys": value("drop_keys", ()),
            "redact_builtins": value("redact_builtins", REDACT_BUILTINS),
            "redact_patterns": value("redact_patterns", ()),
            "dedup": value("dedup", False),
        }

    def _action(self, kind: ActionKind, merged: Mapping[str, tuple[Any, Path_]], at: Path_, *,
                check_options: bool) -> Action:
        selection = self._selection(merged, check_options=check_options)
        options = {key: merged[key][0] for key in sorted(kind.options) if key in merged}
        try:
            key = kind.key(options, selection["dataset"])
        except ActionError as exc:
            raise self.error((*at, exc.key) if exc.key else at, str(exc)) from None
        return Action(kind=kind.name, key=key, options=options, **selection)


def transform_problem(spec: str) -> str | None:
    """None when `spec` names a built-in or imports as package.module:function, else why not."""
    if spec in BUILTIN_TRANSFORMS:
        return None
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        return (f"transform {spec!r} is neither a built-in ({', '.join(BUILTIN_TRANSFORMS)}) "
                "nor package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while importing
        return f"transform {spec!r} does not import: {type(exc).__name__}: {exc} (is its directory on PYTHONPATH?)"
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            return f"transform {spec!r} does not import: {module_name} has no {attribute}"
    if not callable(target):
        return f"transform {spec!r} is not callable"
    return None


def import_transform(spec: str) -> Any:
    """The callable a checked "package.module:function" spec names."""
    module_name, _, attribute = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target

