"""Write examples idempotently: create the new, update the changed, leave the identical alone.

LangSmith answers an existing example id with 409 and may refuse a whole bulk request for one;
a conflict is never a failure and never costs the other examples of that request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langsmith import utils as ls_utils

from workers.errors import RunError, classify
from workers.examples import differs
from workers.runtime import Runtime

LIST_CHUNK = 100  # ids per GET /examples (URL length)
WRITE_BATCH = 200
MAX_CONFLICT_ROUNDS = 3

Outcomes = dict[str, RunError | None]  # run id -> None when written (or already identical)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _as_dict(example: Any) -> dict[str, Any]:
    return {"id": str(example.id), "inputs": example.inputs, "outputs": example.outputs,
            "metadata": example.metadata}


async def resolve_dataset(runtime: Runtime, name: str) -> str:
    """The dataset's id, created if missing; cached for the life of the worker."""
    if name in runtime.datasets:
        return runtime.datasets[name]
    client = runtime.client
    try:
        dataset = await runtime.call(client.read_dataset, dataset_name=name)
    except ls_utils.LangSmithNotFoundError:
        try:
            dataset = await runtime.call(
                client.create_dataset, name,
                description="Examples from LangSmith automation rules (langsmith-webhook-pipeline).")
        except ls_utils.LangSmithConflictError:  # another worker created it just now
            dataset = await runtime.call(client.read_dataset, dataset_name=name)
    runtime.datasets[name] = str(dataset.id)
    return runtime.datasets[name]


class Writer:
    def __init__(self, runtime: Runtime, dataset_id: str) -> None:
        self.runtime = runtime
        self.dataset_id = dataset_id

    def _dataset_gone(self) -> RunError:
        """Someone deleted the dataset since this worker cached its id: forget the id, so the
        retry creates the dataset again instead of failing every run for good."""
        for name, dataset_id in list(self.runtime.datasets.items()):
            if dataset_id == self.dataset_id:
                del self.runtime.datasets[name]
        return RunError("writing the example: the dataset is gone (deleted?); it is created again on retry",
                        transient=True)

    async def existing(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        async def one_chunk(chunk: Sequence[str]) -> list[Any]:
            return await self.runtime.call(
                lambda: list(self.runtime.client.list_examples(dataset_id=self.dataset_id, example_ids=chunk)))

        found: dict[str, dict[str, Any]] = {}
        for examples in await asyncio.gather(*(one_chunk(c) for c in chunks(ids, LIST_CHUNK))):
            for example in examples:
                found[str(example.id)] = _as_dict(example)
        return found

    async def write(self, examples: Sequence[dict[str, Any]]) -> Outcomes:
        """Outcome per run id (examples carry `source_run_id`)."""
        outcomes: Outcomes = {}
        pending = list(examples)
        for _ in range(MAX_CONFLICT_ROUNDS):
            try:
                stored = await self.existing([e["id"] for e in pending])
            except ls_utils.LangSmithNotFoundError:
                return {**outcomes, **dict.fromkeys((e["source_run_id"] for e in pending), self._dataset_gone())}
            except Exception as exc:
                error = classify(exc, "reading existing examples")
                return {**outcomes, **{e["source_run_id"]: error for e in pending}}
            new = [e for e in pending if e["id"] not in stored]
            changed = [e for e in pending if e["id"] in stored and differs(stored[e["id"]], e)]
            changed_ids = {e["id"] for e in changed}
            for example in pending:
                if example["id"] in stored and example["id"] not in changed_ids:
                    outcomes[example["source_run_id"]] = None  # already identical: left alone
            results = await asyncio.gather(
                *(self._bisecting(batch, self._create) for batch in chunks(new, WRITE_BATCH)),
                *(self._bisecting(batch, self._update) for batch in chunks(changed, WRITE_BATCH)),
            )
            conflicted: list[dict[str, Any]] = []
            for result in results:
                for example, outcome in result:
                    if outcome == "conflict":
                        conflicted.append(example)
                    else:
                        outcomes[example["source_run_id"]] = outcome  # type: ignore[assignment]
            if not conflicted:
                return outcomes
            pending = conflicted  # created meanwhile by someone else: compare again
        for example in pending:
            outcomes[example["source_run_id"]] = RunError("writing the example: kept conflicting",
                                                          transient=True)
        return outcomes

    async def _create(self, batch: Sequence[dict[str, Any]]) -> None:
        await self.runtime.call(self.runtime.client.create_examples, dataset_id=self.dataset_id,
                                examples=list(batch))

    async def _update(self, batch: Sequence[dict[str, Any]]) -> None:
        updates = [{"id": e["id"], "inputs": e["inputs"], "outputs": e["outputs"], "metadata": e["metadata"]}
                   for e in batch]
        await self.runtime.call(self.runtime.client.update_examples, dataset_id=self.dataset_id,
                                updates=updates)

    async def _bisecting(self, batch: Sequence[dict[str, Any]],
                         send: Callable[[Sequence[dict[str, Any]]], Awaitable[None]]
                         ) -> list[tuple[dict[str, Any], RunError | str | None]]:
        """Send a batch; on a conflict report it for another round; on a permanent error split
        the batch in halves until the examples at fault are alone, so the rest still land."""
        try:
            await send(batch)
            return [(e, None) for e in batch]
        except ls_utils.LangSmithConflictError:
            return [(e, "conflict") for e in batch]
        except ls_utils.LangSmithNotFoundError:
            return [(e, self._dataset_gone()) for e in batch]
        except Exception as exc:
            error = classify(exc, "writing the example")
            if error.transient or len(batch) == 1:
                return [(e, error) for e in batch]
        middle = len(batch) // 2
        halves = await asyncio.gather(self._bisecting(batch[:middle], send),
                                      self._bisecting(batch[middle:], send))
        return halves[0] + halves[1]
