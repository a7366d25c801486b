"""One slice of runs in, examples out: feedback, hydrate, read the rest in bulk, write.

A delivery is processed a slice at a time (workers/jobs.py), so a worker holds at most one
slice: at most SLICE_RUNS runs, and presigned objects are fetched only until the slice holds
SLICE_BYTES; the runs not reached wait for the next slice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from workers import feedback
from workers.errors import RunError, classify
from workers.examples import build_example
from workers.hydrate import Hydrated, Hydrator, settle_from_api
from workers.langsmith import RunRef
from workers.runtime import S3_CONCURRENCY, Runtime
from workers.writer import SKIPPED, Outcomes, Writer, resolve_dataset

# bench/workers.py: 100 runs keep the per-request overhead of bulk calls small, while a slice of
# 256 KB objects stays near 25 MB of JSON held at once (the memory bound in the README).
SLICE_RUNS = 100
SLICE_BYTES = 16 * 1024 * 1024


async def _hydrate_bounded(hydrator: Hydrator, pending: list[tuple[Hydrated, tuple[str, ...]]], max_bytes: int
                           ) -> tuple[list[Hydrated], list[dict[str, Any]]]:
    """Fetch objects in order, S3_CONCURRENCY at a time, starting no new fetch once the slice
    holds max_bytes; the runs not started are handed back for the next slice."""
    done: list[Hydrated] = []
    in_flight: set[asyncio.Future[Hydrated]] = set()
    held = index = 0

    async def one(item: Hydrated, names: tuple[str, ...]) -> Hydrated:
        try:
            return await hydrator.without_api(item, names)
        except Exception as exc:
            item.error = classify(exc, "hydrating")
            return item

    while index < len(pending) or in_flight:
        while index < len(pending) and len(in_flight) < S3_CONCURRENCY and held < max_bytes:
            in_flight.add(asyncio.ensure_future(one(*pending[index])))
            index += 1
        if not in_flight:
            break
        finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        for future in finished:
            item = future.result()
            held += item.bytes
            done.append(item)
    return done, [item.run for item, _ in pending[index:]]


async def process_slice(runtime: Runtime, runs: list[dict[str, Any]], rule_id: str | None
                        ) -> tuple[Outcomes, list[dict[str, Any]]]:
    """An outcome for each run processed, and the runs deferred to the next slice."""
    started = time.perf_counter()
    mode = runtime.settings.outputs
    dataset_task = asyncio.ensure_future(resolve_dataset(runtime, runtime.settings.dataset_for(rule_id)))
    try:
        return await _process(runtime, runs, rule_id, mode, dataset_task)
    finally:
        if not dataset_task.done():
            dataset_task.cancel()
        await asyncio.gather(dataset_task, return_exceptions=True)
        runtime.recorder.slice(time.perf_counter() - started, len(runs))


async def _process(runtime: Runtime, runs: list[dict[str, Any]], rule_id: str | None, mode: str,
                   dataset_task: asyncio.Future[str]) -> tuple[Outcomes, list[dict[str, Any]]]:
    outcomes: Outcomes = {}
    joined = await runtime.langsmith.feedback([str(run["id"]) for run in runs])
    pending: list[tuple[Hydrated, tuple[str, ...]]] = []
    scores: dict[str, dict[str, Any]] = {}
    for run in runs:
        run_id = str(run["id"])
        items = joined.get(run_id, [])
        if isinstance(items, RunError):
            outcomes[run_id] = items
            continue
        scores[run_id] = feedback.latest_scores(items)
        correction = feedback.correction_outputs(items) if mode != "run" else None
        if correction is None and mode == "correction":
            outcomes[run_id] = SKIPPED  # this mode keeps only runs with a correction
            continue
        item = Hydrated(run)
        if correction is not None:
            item.values["outputs"] = correction
        pending.append((item, ("inputs",) if correction is not None else ("inputs", "outputs")))

    hydrated, deferred = await _hydrate_bounded(Hydrator(runtime), pending, SLICE_BYTES)
    need_api = [item for item in hydrated if item.from_api and item.error is None]
    if need_api:
        found = await runtime.langsmith.read_runs(
            [RunRef.of(item.run) for item in need_api],
            inputs=any("inputs" in item.from_api for item in need_api),
            outputs=any("outputs" in item.from_api for item in need_api),
            page_size=SLICE_RUNS)
        for item in need_api:
            settle_from_api(item, found.get(item.id))

    try:
        dataset_id = await dataset_task
    except Exception as exc:
        error = classify(exc, "finding or creating the dataset")
        return {**outcomes, **{item.id: error for item in hydrated}}, deferred

    examples = []
    for item in hydrated:
        if item.error is not None:
            outcomes[item.id] = item.error
            continue
        examples.append(build_example(dataset_id=dataset_id, run=item.run, rule_id=rule_id,
                                      inputs=item.values["inputs"] or {}, outputs=item.values.get("outputs"),
                                      scores=scores[item.id]))
    outcomes.update(await Writer(runtime, dataset_id).write(examples))
    return outcomes, deferred
