"""Write examples idempotently: create the new, update the changed, leave the identical alone.

LangSmith answers an existing example id with 409 and may refuse a whole bulk request for one;
a conflict is never a failure and never costs the other examples of that request. LangSmith
replaces an example's metadata whole on update, so an update sends the metadata just read with
our keys changed: keys a reviewer added and the split (`metadata.dataset_split`) survive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langsmith import utils as ls_utils

from workers.build.examples import differs, merged_metadata
from workers.errors import RunError
from workers.langsmith.door import LangSmith, chunks, split_on_refusal
from workers.runtime import Runtime

WRITE_BATCH = 200
MAX_CONFLICT_ROUNDS = 3

WRITTEN, UPDATED, UNCHANGED, SKIPPED = "written", "updated", "unchanged", "skipped"
CONFLICT = "conflict"  # created meanwhile by someone else: another round compares again
Outcome = str | RunError  # one of the four above, or what stopped the run
Outcomes = dict[str, Outcome]  # run id -> outcome


def _as_dict(example: Any) -> dict[str, Any]:
    return {"id": str(example.id), "inputs": example.inputs, "outputs": example.outputs,
            "metadata": example.metadata}


async def resolve_dataset(runtime: Runtime, name: str) -> str:
    """The dataset's id, created if missing; cached for the life of the worker."""
    if name not in runtime.datasets:
        runtime.datasets[name] = await runtime.langsmith.dataset_id(name)
    return runtime.datasets[name]


def _create_payload(example: dict[str, Any]) -> dict[str, Any]:
    payload = {"id": example["id"], "inputs": example["inputs"], "reference_outputs": example["outputs"],
               "metadata": example["metadata"], "source_run_id": example["source_run_id"]}
    if example.get("split"):
        payload["split"] = example["split"]  # set once, at creation; updates never change it
    return payload


class Writer:
    def __init__(self, runtime: Runtime, dataset_id: str) -> None:
        self.runtime = runtime
        self.langsmith: LangSmith = runtime.langsmith
        self.dataset_id = dataset_id

    def _dataset_gone(self) -> RunError:
        """Someone deleted the dataset since this worker cached its id: forget the id, so the
        retry creates the dataset again instead of failing every run for good."""
        for name, dataset_id in list(self.runtime.datasets.items()):
            if dataset_id == self.dataset_id:
                del self.runtime.datasets[name]
        return RunError("writing the example: the dataset is gone (deleted?); it is created again on retry",
                        transient=True)

    async def _stored(self, ids: Sequence[str]) -> tuple[dict[str, dict[str, Any]], dict[str, RunError]]:
        found: dict[str, dict[str, Any]] = {}
        errors: dict[str, RunError] = {}
        for batch, result in await self.langsmith.examples(self.dataset_id, ids):
            if isinstance(result, RunError):
                gone = "not found" in result.reason
                errors.update(dict.fromkeys(batch, self._dataset_gone() if gone else result))
                continue
            for example in result:
                found[str(example.id)] = _as_dict(example)
        return found, errors

    async def write(self, examples: Sequence[dict[str, Any]], *, by: str = "source_run_id",
                    keep_stored: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None) -> Outcomes:
        """Outcome per run id (examples carry `source_run_id`), or per example id with `by="id"`
        (a transform may make several examples of one run). `keep_stored(stored, wanted)` true
        leaves a stored example alone (unchanged) although it differs: a thread's example is never
        replaced by a shorter or stale read of the thread (workers/flow/threads.py)."""
        outcomes: Outcomes = {}
        pending = list(examples)
        for _ in range(MAX_CONFLICT_ROUNDS):
            stored, errors = await self._stored([e["id"] for e in pending])
            new, changed = [], []
            for example in pending:
                run_id = example[by]
                if example["id"] in errors:
                    outcomes[run_id] = errors[example["id"]]
                elif example["id"] not in stored:
                    new.append(example)
                elif keep_stored is not None and keep_stored(stored[example["id"]], example):
                    outcomes[run_id] = UNCHANGED
                elif differs(stored[example["id"]], example):
                    changed.append({**example,
                                    "metadata": merged_metadata(stored[example["id"]], example["metadata"])})
                else:
                    outcomes[run_id] = UNCHANGED
            results = await asyncio.gather(
                *(self._send(batch, self._create, WRITTEN) for batch in chunks(new, WRITE_BATCH)),
                *(self._send(batch, self._update, UPDATED) for batch in chunks(changed, WRITE_BATCH)),
            )
            conflicted: list[dict[str, Any]] = []
            for result in results:
                for example, outcome in result:
                    if outcome == CONFLICT:
                        conflicted.append(example)
                    else:
                        outcomes[example[by]] = outcome
            if not conflicted:
                return outcomes
            pending = conflicted  # created meanwhile by someone else: compare again
        for example in pending:
            outcomes[example[by]] = RunError("writing the example: kept conflicting", transient=True)
        return outcomes

    async def _create(self, batch: Sequence[dict[str, Any]]) -> None:
        await self.langsmith.create_examples(self.dataset_id, [_create_payload(e) for e in batch])

    async def _update(self, batch: Sequence[dict[str, Any]]) -> None:
        await self.langsmith.update_examples(
            self.dataset_id,
            [{"id": e["id"], "inputs": e["inputs"], "outputs": e["outputs"], "metadata": e["metadata"]} for e in batch])

    async def _send(self, batch: Sequence[dict[str, Any]],
                    send: Callable[[Sequence[dict[str, Any]]], Awaitable[None]], done: str
                    ) -> list[tuple[dict[str, Any], Outcome]]:
        """Send a batch; on a conflict report it for another round; on a permanent error split
        the batch in halves until the examples at fault are alone, so the rest still land. A
        conflict or a gone dataset is the whole batch's answer, never split."""

        async def sent(part: Sequence[dict[str, Any]]) -> Outcome:
            try:
                await send(part)
            except ls_utils.LangSmithConflictError:
                return CONFLICT
            except ls_utils.LangSmithNotFoundError:
                return self._dataset_gone()
            return done

        return [(example, outcome) for part, outcome in await split_on_refusal(batch, sent, "writing the example")
                for example in part]
