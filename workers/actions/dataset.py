"""The `dataset` action: a run's examples in a LangSmith dataset (without a rules file, the only one).

`examples` (pure) turns a run's drafts (what its transforms returned) into the examples to write:
the first keeps the id a run has always had, uuid5(dataset, run id), so adding a transform later
updates the example instead of duplicating it; a transform's further examples get
uuid5(dataset, run id, index). The split is set at creation (LangSmith keeps it in
`metadata.dataset_split`) and an update keeps it, since the writer merges metadata. The writer
(workers/actions/dataset_writer.py) is the one edge: idempotent create/update, 409 rounds, bisecting. The dataset
is found or created once per slice (`prepare`, cached for the life of the worker). A thread's
example (`write_threads`) is never replaced by a shorter or stale read of the thread (`keep_longer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lswh_core.actions import DatasetKind
from lswh_core.rules import Action
from workers.actions.base import Destination, keep_longer, register
from workers.actions.dataset_writer import Outcomes, Writer, resolve_dataset
from workers.build.examples import example_id
from workers.runtime import Runtime
from workers.transforms import ExampleDraft


def nth_example_id(dataset_id: str, run_id: str, index: int) -> str:
    """Example `index` of a run in a dataset; index 0 is the run's one example id (example_id)."""
    return example_id(dataset_id, run_id if index == 0 else f"{run_id}:{index}")


def examples(dataset_id: str, run_id: str, drafts: Sequence[ExampleDraft], split: str | None
             ) -> list[dict[str, Any]]:
    return [{"id": nth_example_id(dataset_id, run_id, index), "inputs": draft["inputs"],
             "outputs": draft.get("outputs"), "metadata": draft.get("metadata") or {},
             "source_run_id": run_id, **({"split": split} if split else {})}
            for index, draft in enumerate(drafts)]


class Dataset(DatasetKind, Destination):
    threads = True
    preparing = "finding or creating the dataset"

    async def prepare(self, runtime: Runtime, action: Action) -> str:
        """The dataset's id."""
        return await resolve_dataset(runtime, action.dataset)

    def rows(self, target: Any, run_id: str, drafts: Sequence[ExampleDraft], split: str | None
             ) -> list[dict[str, Any]]:
        return examples(str(target), run_id, drafts, split)

    async def write(self, runtime: Runtime, action: Action, target: Any,
                    rows: Sequence[dict[str, Any]]) -> Outcomes:
        """Outcome per example id."""
        return await Writer(runtime, str(target)).write(rows, by="id")

    async def write_threads(self, runtime: Runtime, action: Action, target: Any,
                            rows: Sequence[dict[str, Any]]) -> Outcomes:
        """Outcome per example id; a stored example with more turns stays (unchanged)."""
        return await Writer(runtime, str(target)).write(rows, by="id", keep_stored=keep_longer)


register(Dataset())
