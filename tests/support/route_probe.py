"""Which rate budget each request the worker's LangSmith door really sends draws from
(tests/test_budget_routes.py), in a process of its own, as a worker would run it.

    python -m tests.support.route_probe STANDIN_URL RUN_ID PROJECT_ID CALL...

The environment is a worker's (REDIS_URL, LANGSMITH_ENDPOINT, LANGSMITH_API_KEY, LSWH_*). The door
is built as `lswh worker` builds it (workers.runtime.Runtime), with its real budget in Redis and
its real Prometheus figures. After a warm-up (`/info`, the dataset), each CALL runs alone and the
probe prints one JSON line: {"call", "budget": {route: budgeted attempts}, "sent": {method and
path template: requests}, "standin": {the stand-in's own count per route}}. Every budgeted attempt
is one `lswh_budget_wait_seconds` observation (waits of 0 s included), under the route the budget
was drawn from, so "budget" pairs with "sent" request for request.

Why a subprocess: the Runtime's loop and SDK threads outlive the call, and a previous in-process
version of this check ended the pytest run with a SystemError at interpreter exit (hypothesis,
Python 3.11).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from lswh_core.settings import Settings
from workers.bookkeeping import metrics
from workers.langsmith.door import RuleInfo, RunRef
from workers.runtime import Runtime


def _samples(name: str, label: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name:
                found[sample.labels[label]] += int(sample.value)
    return found


def _figures(standin: httpx.Client) -> tuple[Counter[str], Counter[str], Counter[str]]:
    stats = standin.get("/_admin/stats").json()["requests"]
    return (_samples("lswh_budget_wait_seconds_count", "route"),
            _samples("lswh_upstream_requests_total", "route"),
            Counter({k: int(v) for k, v in stats.items()}))


def _delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] - before[k]}


def main(argv: list[str]) -> int:
    standin_url, run_id, project_id, *calls = argv
    runtime = Runtime(Settings.from_env())
    door = runtime.langsmith
    ref = RunRef(run_id, project_id, (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat())
    rule = RuleInfo(id=str(uuid.uuid4()), project_id=project_id, dataset_id=None, filter=None, trace_filter=None,
                    tree_filter=None, is_enabled=True, sampling_rate=1.0)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)

    async def matched() -> list[Any]:
        return [loc async for loc in door.match_runs(rule, start=start, end=end, with_data=True)]

    runtime.run(door.call(door.backend))  # GET /info, once per client: not any call's request
    dataset_id = runtime.run(door.dataset_id(f"probe-{uuid.uuid4().hex[:8]}"))
    actions: dict[str, Callable[[], Any]] = {
        # the job path's bulk read of API-only runs: v2 or v1 query, as the server's /info says
        "read_runs": lambda: runtime.run(door.read_runs([ref], inputs=True, outputs=True, page_size=500)),
        # a backfill's listing
        "match_runs": lambda: runtime.run(matched()),
        # the SDK's v2 retrieve, through the door's budgeted v2 client
        "retrieve_v2": lambda: runtime.run(door.v2().runs.retrieve_v2(run_id, project_id=project_id,
                                                                        selects=["ID"])),
        # GET /runs/{id} through the door's budgeted hand-written client
        "read_run_v1": lambda: runtime.run(door.call(door.client.request_with_retries, "GET", f"/runs/{run_id}")),
        "examples": lambda: runtime.run(door.examples(dataset_id, [str(uuid.uuid4())])),
        "feedback": lambda: runtime.run(door.feedback([run_id])),
        "rules": lambda: runtime.run(door.rules()),
    }
    with httpx.Client(base_url=standin_url, timeout=30) as standin:
        for call in calls:
            before = _figures(standin)
            actions[call]()
            after = _figures(standin)
            budget, sent, seen = (_delta(a, b) for a, b in zip(after, before, strict=True))
            print(json.dumps({"call": call, "budget": budget, "sent": sent, "standin": seen}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
