"""Action kinds: the one registry every kind of action (the rules file's `type`) is dispatched through.

Decision. A kind has two halves, and each lives where it is used:

- what the rules file needs (this module's `ActionKind`): the kind's name, its own option keys
  and how each is checked, how the action's key is derived from them, and whether the action
  takes runs or examples. The rules file is checked at start-up in processes that never import
  the workers (`lswh check`, the ingress), and `lswh_core` imports nothing from `workers`, so this
  half cannot live there;
- what the worker does (workers/actions/base.py's `Destination`, an `ActionKind` subclass):
  `prepare` once per slice and `write` the rows.

There is one registry, here, keyed by name. The three built-in kinds register their rules half in
this module; importing `workers.actions` registers their worker halves in their place (the same
name, a subclass), so a worker dispatches every action through `destination()` with no branch on
the kind. A kind of one's own is one class (a `Destination`) registered with `register()` in a
module of one's own; the rules file names that module in its top-level `action_modules`, and
`load_rules` imports it before reading the actions, like a transform's "package.module:function"
(docs/rules.md, "Actions of your own"). Every process that reads the rules file therefore knows
the kind: the check at start-up and the worker alike. The price, as for a transform: the ingress
imports that module (and the workers modules it imports) when it checks the rules file; the
ingress's own code still imports nothing from the workers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

Takes = Literal["runs", "examples"]


def type_name(value: object) -> str:
    """How an error message names a TOML value's type."""
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


class ActionError(ValueError):
    """A problem with an action's options; `key` names the option at fault (None: the action)."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(problem)
        self.key = key


class ActionKind:
    """The rules file's view of one kind of action. Subclass, set `name` (and `options`, `takes`),
    override `check` and `key`.

    `takes = "examples"`: the run goes through the rule's transforms and the action receives
    example rows; it accepts the example-shaping keys (dataset, transform, splits, dedup, ...).
    `takes = "runs"`: the action receives the runs themselves; example-shaping keys there would be
    ignored, so they are refused.
    """

    name: ClassVar[str]
    takes: ClassVar[Takes] = "examples"
    options: ClassVar[frozenset[str]] = frozenset()  # the kind's own keys

    def check(self, key: str, value: Any) -> Any:
        """One own option's value as the action keeps it; raise ActionError(problem) if wrong.
        By default a non-empty string, stripped."""
        if not isinstance(value, str):
            raise ActionError(f"must be a string, got {type_name(value)}")
        if not value.strip():
            raise ActionError("must not be empty")
        return value.strip()

    def key(self, options: Mapping[str, Any], dataset: str) -> str:
        """The action's key, unique within its rule (two actions with one key are one action
        written twice, refused). `options` are the checked own options set; `dataset` the
        resolved dataset name. Raise ActionError for options that do not go together."""
        return f"{self.name}:{dataset}"


_KINDS: dict[str, ActionKind] = {}


def register(kind: ActionKind) -> ActionKind:
    """Make `kind` the one answering to `kind.name`. A name already taken may be registered again
    only by a subclass of its kind (the workers' built-ins replacing their rules halves), so a
    module of one's own cannot replace a built-in, whatever the import order."""
    if not getattr(kind, "name", None):
        raise ValueError(f"{type(kind).__name__} has no name")
    if kind.takes not in ("runs", "examples"):
        raise ValueError(f"{kind.name}: takes must be 'runs' or 'examples', got {kind.takes!r}")
    taken = _KINDS.get(kind.name)
    if taken is not None and not isinstance(kind, type(taken)):
        raise ValueError(f"action kind {kind.name!r} is taken by {type(taken).__module__}.{type(taken).__name__}")
    _KINDS[kind.name] = kind
    return kind


def kind(name: str) -> ActionKind | None:
    return _KINDS.get(name)


def kind_names() -> tuple[str, ...]:
    """The registered kinds' names, built-ins first, in registration order."""
    return tuple(_KINDS)


# --- the built-in kinds' rules halves ----------------------------------------------------------


class DatasetKind(ActionKind):
    """Examples in a LangSmith dataset (without a rules file, the only action)."""

    name = "dataset"


class AnnotationQueueKind(ActionKind):
    """The run added to a LangSmith annotation queue, by name (`queue`) or id (`queue_id`)."""

    name = "annotation_queue"
    takes = "runs"
    options = frozenset(("queue", "queue_id"))

    def check(self, key: str, value: Any) -> Any:
        text = super().check(key, value)
        if key == "queue_id":
            try:
                return str(uuid.UUID(text))
            except ValueError:
                raise ActionError(f"must be an annotation queue's UUID, got {text!r}") from None
        return text

    def key(self, options: Mapping[str, Any], dataset: str) -> str:
        name, queue_id = options.get("queue"), options.get("queue_id")
        if (name is None) == (queue_id is None):
            raise ActionError("an annotation_queue action needs exactly one of queue (its name) or queue_id")
        return f"annotation_queue:{f'id:{queue_id}' if queue_id else f'name:{name}'}"


class JsonlKind(ActionKind):
    """Examples appended to JSON Lines files under `directory`, one folder per dataset."""

    name = "jsonl"
    options = frozenset(("directory",))

    def key(self, options: Mapping[str, Any], dataset: str) -> str:
        if "directory" not in options:
            raise ActionError("a jsonl action needs directory = \"/path/to/dir\"")
        return f"jsonl:{options['directory']}:{dataset}"


for _builtin in (DatasetKind(), AnnotationQueueKind(), JsonlKind()):
    register(_builtin)
