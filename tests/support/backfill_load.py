"""A rule's backlog for `lswh backfill`, shared by tests/test_budget_routes.py and bench/backfill.py:
N runs of one rule whose inputs and outputs only the API has, a share of them corrected by
feedback, a share already delivered and written before the backfill starts.

Requests are counted at the stand-in (its `/_admin/stats`), every LangSmith route included.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.support.commands import run_lswh
from tests.support.stack import Pipeline, delivery, fresh_run

SEED_CHUNK = 1_000


@dataclass
class Scenario:
    project: str
    rule_id: str
    runs: list[dict[str, Any]]
    corrected: set[str]
    delivered: set[str]


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    requests: int
    rate_limited: int
    per_route: dict[str, int] = field(default_factory=dict)
    runs: int = 0

    @property
    def requests_per_1000(self) -> float:
        return self.requests * 1000 / max(1, self.runs)

    @property
    def runs_per_minute(self) -> float:
        return self.runs * 60 / self.seconds if self.seconds else 0.0


def correction(run_id: str) -> str:
    return f"fixed {run_id[:8]}"


def seed(stack: Pipeline, n: int, *, corrected_share: float = 0.2, delivered_share: float = 0.1,
         timeout: float = 300) -> Scenario:
    """The runs, the corrections, the rule; the delivered share posted to the ingress and waited for."""
    standin = stack.standin
    project = str(uuid.uuid4())
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
    runs = [fresh_run(session_id=project, start_time=start, name="chat", inputs={"q": f"question {i}"},
                      outputs={"a": f"answer {i}"}) for i in range(n)]
    for first in range(0, n, SEED_CHUNK):
        standin.add_runs(runs[first:first + SEED_CHUNK])
    corrected = [r["id"] for r in runs[::max(1, round(1 / corrected_share))]] if corrected_share else []
    for first in range(0, len(corrected), SEED_CHUNK):
        standin.add_feedback([{"run_id": run_id, "key": "correctness", "correction": correction(run_id)}
                              for run_id in corrected[first:first + SEED_CHUNK]])
    [rule_id] = standin.add_rules([{"project_id": project}])
    step = max(1, round(1 / delivered_share)) if delivered_share else 0
    delivered = [r for r in runs[1::step]] if step else []
    for first in range(0, len(delivered), SEED_CHUNK):
        # As LangSmith sends a large run: inputs and outputs left to the API.
        chunk = [{**r, "inputs": None, "outputs": None} for r in delivered[first:first + SEED_CHUNK]]
        response = stack.post(delivery(chunk, rule_id=rule_id))
        assert response.status_code == 202, response.text
    if delivered:
        stack.wait_examples([r["id"] for r in delivered], timeout=timeout)
        stack.wait_idle(timeout=timeout)
    return Scenario(project, rule_id, runs, set(corrected), {r["id"] for r in delivered})


def backfill(stack: Pipeline, scenario: Scenario, *, timeout: float = 600, env: dict[str, str] | None = None
             ) -> Measured:
    """`lswh backfill` of the rule over the last hour, timed from start to its exit."""
    before = stack.standin.stats()
    started = time.monotonic()
    done = run_lswh({**stack.env, **(env or {})}, "backfill", "--rule", scenario.rule_id, "--since", "1h",
                    timeout=timeout)
    seconds = time.monotonic() - started
    after = stack.standin.stats()
    per_route = {k: v - before["requests"].get(k, 0) for k, v in after["requests"].items()
                 if "/s3/" not in k and v - before["requests"].get(k, 0)}
    return Measured(done.returncode, done.stdout, done.stderr, seconds, sum(per_route.values()),
                    int(after["rate_limited_total"]) - int(before["rate_limited_total"]), per_route,
                    runs=len(scenario.runs))


def verify(stack: Pipeline, scenario: Scenario) -> None:
    """Every run exactly once in the dataset, its inputs, and its correction when it has one."""
    examples = stack.standin.examples_by_run([r["id"] for r in scenario.runs], stack.dataset)
    missing = [r["id"] for r in scenario.runs if r["id"] not in examples]
    assert not missing, f"{len(missing)} runs have no example, e.g. {missing[:3]}"
    twice = [run_id for run_id, found in examples.items() if len(found) != 1]
    assert not twice, f"{len(twice)} runs have more than one example, e.g. {twice[:3]}"
    for i, run in enumerate(scenario.runs):
        [example] = examples[run["id"]]
        assert example["inputs"] == {"q": f"question {i}"}, example
        want = {"output": correction(run["id"])} if run["id"] in scenario.corrected else {"a": f"answer {i}"}
        assert example["outputs"] == want, (run["id"], example["outputs"], want)
