"""Runs in, examples out: hydrate, join feedback, build and write, with an outcome per run."""

from __future__ import annotations

import asyncio
from typing import Any

from workers import feedback
from workers.errors import classify
from workers.examples import build_example
from workers.hydrate import Hydrator
from workers.runtime import Runtime
from workers.writer import Outcomes, Writer, chunks, resolve_dataset

FEEDBACK_CHUNK = 100  # run ids per GET /feedback (URL length)


async def list_feedback(runtime: Runtime, run_ids: list[str]) -> list[Any]:
    async def one_chunk(chunk: list[str]) -> list[Any]:
        return await runtime.call(lambda: list(runtime.client.list_feedback(run_ids=chunk)))

    pages = await asyncio.gather(*(one_chunk(list(c)) for c in chunks(run_ids, FEEDBACK_CHUNK)))
    return [item for page in pages for item in page]


async def process_runs(runtime: Runtime, runs: list[dict[str, Any]], rule_id: str | None) -> Outcomes:
    """Every run gets an outcome: None (its example is written, or it is skipped by
    LSWH_OUTPUTS=correction) or the RunError that stopped it."""
    mode = runtime.settings.outputs
    run_ids = [str(run["id"]) for run in runs]
    hydrator = Hydrator(runtime)
    dataset_task = asyncio.ensure_future(resolve_dataset(runtime, runtime.settings.dataset_for(rule_id)))
    inputs_tasks = {rid: asyncio.ensure_future(hydrator.inputs(run)) for rid, run in zip(run_ids, runs,
                                                                                         strict=True)}
    try:
        items = await list_feedback(runtime, run_ids)
    except Exception as exc:
        error = classify(exc, "listing feedback")
        await _settle(dataset_task, *inputs_tasks.values())
        return dict.fromkeys(run_ids, error)
    joined = feedback.by_run(items)

    outcomes: Outcomes = {}
    corrections = {rid: feedback.correction_outputs(joined.get(rid, [])) if mode != "run" else None
                   for rid in run_ids}
    outputs_tasks: dict[str, asyncio.Future[Any]] = {}
    for rid, run in zip(run_ids, runs, strict=True):
        if corrections[rid] is not None:
            continue
        if mode == "correction":
            outcomes[rid] = None  # no correction: this mode skips the run
            inputs_tasks.pop(rid).cancel()
            continue
        outputs_tasks[rid] = asyncio.ensure_future(hydrator.outputs(run))

    try:
        dataset_id = await dataset_task
    except Exception as exc:
        error = classify(exc, "finding or creating the dataset")
        await _settle(*inputs_tasks.values(), *outputs_tasks.values())
        return {**outcomes, **dict.fromkeys(inputs_tasks, error)}

    examples = []
    for rid, run in zip(run_ids, runs, strict=True):
        if rid not in inputs_tasks:
            continue
        try:
            inputs = await inputs_tasks[rid]
            outputs = corrections[rid] if corrections[rid] is not None else await outputs_tasks[rid]
        except Exception as exc:
            outcomes[rid] = classify(exc, "hydrating")
            continue
        examples.append(build_example(dataset_id=dataset_id, run=run, rule_id=rule_id, inputs=inputs,
                                      outputs=outputs, scores=feedback.latest_scores(joined.get(rid, []))))
    # Outputs of runs whose inputs failed are still in flight: wait, so nothing is left dangling.
    await asyncio.gather(*outputs_tasks.values(), return_exceptions=True)
    outcomes.update(await Writer(runtime, dataset_id).write(examples))
    return outcomes


async def _settle(*tasks: asyncio.Future[Any]) -> None:
    """Let sibling work finish or fail quietly once the batch's fate is decided."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

