"""An action kind of a user's own, as docs/rules.md ("Actions of your own") says to write one:
this module is all of it, registered when the rules file's `action_modules` names it.

`type = "echo"` appends each example as a JSON line to the Redis list `list` (on the worker's own
Redis), so a test reads what was delivered. It takes no LangSmith dataset: its target is the
action's dataset name, and example ids come from it and the run id, as a jsonl action's do.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from lswh_core.actions import ActionError
from lswh_core.rules import Action
from workers.actions import Destination, register
from workers.actions.dataset_writer import WRITTEN, Outcomes
from workers.runtime import Runtime
from workers.transforms import ExampleDraft

NAMESPACE = uuid.UUID("0b5e3c1e-6f0a-4d5e-9a0b-ec40ec40ec40")


class Echo(Destination):
    name = "echo"
    options = frozenset(("list",))

    def key(self, options: Mapping[str, Any], dataset: str) -> str:
        if "list" not in options:
            raise ActionError('an echo action needs list = "<redis list>"')
        return f"echo:{options['list']}:{dataset}"

    def rows(self, target: Any, run_id: str, drafts: Sequence[ExampleDraft], split: str | None
             ) -> list[dict[str, Any]]:
        return [{"id": str(uuid.uuid5(NAMESPACE, f"{target}:{run_id}:{index}")), "source_run_id": run_id,
                 "dataset": target, "split": split, "inputs": draft["inputs"], "outputs": draft.get("outputs")}
                for index, draft in enumerate(drafts)]

    async def write(self, runtime: Runtime, action: Action, target: Any, rows: Sequence[dict[str, Any]]) -> Outcomes:
        lines = [json.dumps(row, sort_keys=True) for row in rows]
        await asyncio.to_thread(runtime.redis.rpush, action.options["list"], *lines)
        return dict.fromkeys((row["id"] for row in rows), WRITTEN)


register(Echo())


class ThreadEcho(Echo):
    """The same kind, taking a thread rule's threads too (`threads`): Destination's default
    `thread_rows` (its rows under the thread's key, with the pipeline's thread metadata) and
    `write_threads` (its `write`)."""

    name = "echo-threads"
    threads = True


register(ThreadEcho())
