"""A rule's backlog for `lswh backfill`, shared by tests/test_budget_routes.py and bench/backfill.py:
N runs of one rule whose inputs and outputs only the API has, a share of them corrected by
feedback, a share already delivered and written before the backfill starts.

Requests are counted at the stand-in (its `/_admin/stats`), every LangSmith route included.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import ROOT
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
    backfill_peak_mb: float = 0.0  # VmHWM of the `lswh backfill` process
    worker_peak_mb: list[float] = field(default_factory=list)  # VmHWM of each worker process

    @property
    def requests_per_1000(self) -> float:
        return self.requests * 1000 / max(1, self.runs)

    @property
    def runs_per_minute(self) -> float:
        return self.runs * 60 / self.seconds if self.seconds else 0.0


def correction(run_id: str) -> str:
    return f"fixed {run_id[:8]}"


def peak_mb(pid: int) -> float:
    """The process's VmHWM (the kernel's high-water mark of its resident memory), 0 once gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def inputs_of(i: int, input_kb: int) -> dict[str, Any]:
    return {"q": f"question {i}", **({"blob": "x" * (input_kb * 1024)} if input_kb else {})}


def seed(stack: Pipeline, n: int, *, corrected_share: float = 0.2, delivered_share: float = 0.1,
         timeout: float = 300, input_kb: int = 0) -> Scenario:
    """The runs, the corrections, the rule; the delivered share posted to the ingress and waited for."""
    standin = stack.standin
    project = str(uuid.uuid4())
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
    runs = [fresh_run(session_id=project, start_time=start, name="chat", inputs=inputs_of(i, input_kb),
                      outputs={"a": f"answer {i}"}) for i in range(n)]
    chunk = SEED_CHUNK if not input_kb else max(1, 8 * 1024 // input_kb)  # admin bodies of about 8 MB
    for first in range(0, n, chunk):
        standin.add_runs(runs[first:first + chunk])
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
    """`lswh backfill` of the rule over the last hour, timed from start to its exit; its peak RSS
    is read from /proc while it runs."""
    before = stack.standin.stats()
    exe = shutil.which("lswh", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "lswh.cli"]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([*command, "backfill", "--rule", scenario.rule_id, "--since", "1h"],
                                env={**os.environ, **stack.env, **(env or {})}, cwd=ROOT, stdout=out, stderr=err,
                                text=True)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, peak_mb(proc.pid))
            if time.monotonic() - started > timeout:
                proc.kill()
            time.sleep(0.05)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    after = stack.standin.stats()
    per_route = {k: v - before["requests"].get(k, 0) for k, v in after["requests"].items()
                 if "/s3/" not in k and v - before["requests"].get(k, 0)}
    return Measured(proc.returncode, stdout, stderr, seconds, sum(per_route.values()),
                    int(after["rate_limited_total"]) - int(before["rate_limited_total"]), per_route,
                    runs=len(scenario.runs), backfill_peak_mb=peak,
                    worker_peak_mb=[peak_mb(worker.pid) for worker in stack.workers])


def verify(stack: Pipeline, scenario: Scenario, input_kb: int = 0) -> None:
    """Every run exactly once in the dataset, its inputs, and its correction when it has one."""
    examples = stack.standin.examples_by_run([r["id"] for r in scenario.runs], stack.dataset)
    missing = [r["id"] for r in scenario.runs if r["id"] not in examples]
    assert not missing, f"{len(missing)} runs have no example, e.g. {missing[:3]}"
    twice = [run_id for run_id, found in examples.items() if len(found) != 1]
    assert not twice, f"{len(twice)} runs have more than one example, e.g. {twice[:3]}"
    for i, run in enumerate(scenario.runs):
        [example] = examples[run["id"]]
        assert example["inputs"] == inputs_of(i, input_kb), run["id"]
        want = {"output": correction(run["id"])} if run["id"] in scenario.corrected else {"a": f"answer {i}"}
        assert example["outputs"] == want, (run["id"], example["outputs"], want)
