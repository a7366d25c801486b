"""The `annotation_queue` action: the run added to a LangSmith annotation queue for review.

`queue_item` (pure) is what LangSmith needs to find the run: its id, and where known its project
and start time (the items resource takes both, and a run outside the default window is found by
them). The edge is the door's `add_to_queue`, the SDK's supported items resource, one request per
queue and slice (split when LangSmith refuses one item, so the others still land), within the
shared rate budget. LangSmith does not de-duplicate items, so each queue remembers in Redis the runs
added to it (by any delivery, redelivery, backfill or reconciliation pass): a run already there is
"unchanged", not added again. Within a delivery, the (action, run) record the job path keeps
(workers/bookkeeping/done.py) makes a retry redo only the adds that failed. Two deliveries of one run
processed at the very same moment could both add it: that race is accepted, since a claim taken
before the add would lose the run when a worker dies between the claim and the add. A thread
rule's threads (`write_threads`) are added as THREAD items (`thread_item`), remembered the same
way under their key, "thread:<id>".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lswh_core import contract
from lswh_core.actions import AnnotationQueueKind
from lswh_core.rules import Action
from lswh_core.times import rfc3339
from workers.actions.base import Destination, register
from workers.actions.dataset_writer import UNCHANGED, WRITTEN, Outcomes
from workers.errors import RunError, classify
from workers.langsmith.door import split_on_refusal
from workers.runtime import Runtime

ITEMS_PER_REQUEST = 100


def queue_item(run: Mapping[str, Any]) -> dict[str, Any]:
    """The item's `start_time` is RFC 3339 with an offset (the API's schema: `format: date-time`);
    the webhook's may have none, and means UTC (lswh_core/times.py). One that is no time at all
    is sent as given, so LangSmith's refusal names it and fails that run alone."""
    item: dict[str, Any] = {"item_type": "RUN", "run_id": str(run["id"])}
    if run.get("session_id"):
        item["project_id"] = str(run["session_id"])
    if run.get("start_time"):
        try:
            item["start_time"] = rfc3339(str(run["start_time"]))
        except ValueError:
            item["start_time"] = str(run["start_time"])
    return item


async def queue_id(runtime: Runtime, action: Action) -> str:
    """The queue's id: given, or looked up by name once per worker process."""
    if action.queue_id:
        return action.queue_id
    name = str(action.queue_name)
    if name not in runtime.queues:
        found = await runtime.langsmith.queue_id(name)
        if found is None:
            # Not transient: a retry finds the same nothing; requeue the failed runs once it exists.
            raise RunError(f"annotation queue {name!r} not found in LangSmith (create it, then requeue)",
                           transient=False)
        runtime.queues[name] = found
    return runtime.queues[name]


def thread_item(thread: Mapping[str, Any]) -> dict[str, Any]:
    """A THREAD item: the SDK's items resource needs thread_id and project_id for one
    (types/annotation_queues/item_create_params.py)."""
    return {"item_type": "THREAD", "thread_id": thread["thread_id"], "project_id": thread["project_id"]}


class AnnotationQueue(AnnotationQueueKind, Destination):
    """The queue is looked up in `write`, not `prepare`: a slice none of whose runs go to the
    queue asks LangSmith nothing."""

    threads = True

    async def write(self, runtime: Runtime, action: Action, target: Any, rows: Sequence[dict[str, Any]]) -> Outcomes:
        """Outcome per run id (`rows` are the runs)."""
        return await add_once(runtime, action, rows, queue_item, "adding the run to the annotation queue")

    async def write_threads(self, runtime: Runtime, action: Action, target: Any,
                            rows: Sequence[dict[str, Any]]) -> Outcomes:
        """Outcome per thread key (`rows` are the threads)."""
        return await add_once(runtime, action, rows, thread_item, "adding the thread to the annotation queue")


async def add_once(runtime: Runtime, action: Action, rows: Sequence[Mapping[str, Any]],
              item: Callable[[Mapping[str, Any]], dict[str, Any]], doing: str) -> Outcomes:
    """Each row (a run, or a thread) added to the queue once, as `item` makes it: an outcome per row id."""
    if not rows:
        return {}
    try:
        queue = await queue_id(runtime, action)
    except Exception as exc:
        error = classify(exc, "finding the annotation queue")
        return {str(row["id"]): error for row in rows}

    key = contract.queue_added_key(queue)
    already = runtime.redis.hmget(key, [str(row["id"]) for row in rows])
    outcomes: Outcomes = {str(row["id"]): UNCHANGED for row, seen in zip(rows, already, strict=True) if seen}
    todo = [row for row in rows if str(row["id"]) not in outcomes]

    async def send(batch: Sequence[Mapping[str, Any]]) -> None:
        await runtime.langsmith.add_to_queue(queue, [item(row) for row in batch])

    for start in range(0, len(todo), ITEMS_PER_REQUEST):
        for batch, result in await split_on_refusal(todo[start:start + ITEMS_PER_REQUEST], send, doing):
            if isinstance(result, RunError):
                outcomes.update((str(row["id"]), result) for row in batch)
                continue
            outcomes.update((str(row["id"]), WRITTEN) for row in batch)
            remember(runtime, key, [str(row["id"]) for row in batch])
    return outcomes


register(AnnotationQueue())


def remember(runtime: Runtime, key: str, run_ids: list[str]) -> None:
    """Note these run ids (or thread keys, "thread:<id>") as added to the queue whose record is `key`."""
    added_at = int(time.time())
    with runtime.redis.pipeline() as pipe:
        pipe.hset(key, mapping=dict.fromkeys(run_ids, added_at))
        pipe.expire(key, runtime.settings.keep_seconds)
        pipe.execute()
