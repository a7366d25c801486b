"""The worker's half of an action kind: what the slice processor (workers/flow/slices.py) and the
thread path (workers/flow/threads.py) call.

A `Destination` is an `ActionKind` (lswh_core/actions.py: name, own option keys, key, runs or
examples) that also knows how to deliver. The slice processor, for every action of the rule:

1. starts `prepare(runtime, action)` once per slice, as the slice begins (the dataset kind finds
   or creates its dataset there, concurrently with the feedback and object reads); what it
   returns is the action's `target`, and an exception fails the action's runs of the slice,
   classified with `preparing` as context;
2. for `takes = "examples"`: turns each run's drafts (what the rule's transforms returned) into
   rows with `rows(target, run_id, drafts, split)`, each a dict with at least "id" (the example
   id, deterministic), "inputs" and "source_run_id"; claims them under dedup; then
   `write(runtime, action, target, rows)` the rest, an outcome per example id;
3. for `takes = "runs"`: `write(runtime, action, target, runs)`, an outcome per run id.

An outcome is WRITTEN, UNCHANGED, SKIPPED or a RunError (workers/actions/dataset_writer.py); a run's outcome is
the worst of its rows'. The (action key, run id) pairs done are recorded per delivery
(workers/bookkeeping/done.py), so a failed action is retried alone.

A thread rule's threads (workers/flow/threads.py) go through the same kind, if it sets `threads`
(else each thread fails at once): `prepare` as above, then for `takes = "examples"`
`thread_rows(target, thread_key, drafts, split, metadata)` (by default its `rows` under the
thread's key, "thread:<id>", with the thread's metadata over each draft's) and
`write_threads(runtime, action, target, rows)`, an outcome per example id; for `takes = "runs"`
`write_threads` receives the threads themselves, {"id": thread key, "thread_id", "project_id"},
an outcome per thread key. `write_threads` is `write` by default; a kind that keeps what it
wrote overrides it so a stored item of a longer thread is never replaced by a shorter or stale
read (`keep_longer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from lswh_core import actions as action_kinds
from lswh_core.actions import ActionKind
from lswh_core.rules import Action
from workers.actions.dataset_writer import Outcomes
from workers.errors import RunError
from workers.runtime import Runtime
from workers.transforms import ExampleDraft


class Destination(ActionKind):
    """One kind of action, rules half and worker half. Subclass, then `register(YourKind())`."""

    preparing = "preparing the action"  # the context an error in `prepare` is classified with
    # Whether a thread rule (workers/flow/threads.py) may use the kind (`thread_rows`, `write_threads`);
    # a kind without fails a thread rule's threads at once.
    threads: ClassVar[bool] = False

    async def prepare(self, runtime: Runtime, action: Action) -> Any:
        """The action's target for this slice; by default the action's dataset name."""
        return action.dataset

    def rows(self, target: Any, run_id: str, drafts: Sequence[ExampleDraft], split: str | None
             ) -> list[dict[str, Any]]:
        """An example kind's rows for one run (a runs kind has none)."""
        raise NotImplementedError

    async def write(self, runtime: Runtime, action: Action, target: Any,
                    rows: Sequence[dict[str, Any]]) -> Outcomes:
        """Deliver: an outcome per example id (examples) or per run id (runs)."""
        raise NotImplementedError

    def thread_rows(self, target: Any, thread_key: str, drafts: Sequence[ExampleDraft], split: str | None,
                    metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
        """An example kind's rows for one thread: its `rows` with the thread's key for a run id,
        the pipeline's thread metadata (thread_turns above all, `keep_longer` reads it) over each
        draft's, and the last turn's run as `source_run_id`."""
        return [{**row, "metadata": {**(row.get("metadata") or {}), **metadata}, "source_run_id": metadata["run_id"]}
                for row in self.rows(target, thread_key, drafts, split)]

    async def write_threads(self, runtime: Runtime, action: Action, target: Any,
                            rows: Sequence[dict[str, Any]]) -> Outcomes:
        """Deliver a thread rule's rows (examples), or its threads (runs: {"id": thread key,
        "thread_id", "project_id"} each): an outcome per row id. By default `write`."""
        return await self.write(runtime, action, target, rows)


def keep_longer(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """A stored example of a longer thread is never replaced by a shorter or stale read of it."""
    have = (stored.get("metadata") or {}).get("thread_turns")
    want = (wanted.get("metadata") or {}).get("thread_turns")
    return isinstance(have, int) and isinstance(want, int) and have > want


def register(destination: Destination) -> Destination:
    """Register a kind: the rules file accepts `type = destination.name` from now on, and the
    worker dispatches such actions to `destination`."""
    action_kinds.register(destination)
    return destination


def destination(action: Action) -> Destination:
    """The registered kind that delivers `action`."""
    kind = action_kinds.kind(action.kind)
    if not isinstance(kind, Destination):
        # Only a kind registered with lswh_core's register alone, without a worker half.
        raise RunError(f"action kind {action.kind!r} has no worker half (register a Destination)", transient=False)
    return kind
