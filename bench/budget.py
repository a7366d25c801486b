"""N worker processes share one LangSmith rate budget (workers/langsmith/budget.py) and together stay under
the limit: every process draws as fast as it can, and the table shows the grants per window.

    python -m bench.budget [--quick] [--processes 4] [--limit 15/10s] [--windows 3]

Grant times are Redis' clock, as the budget decides them. "most in any window" slides a window of
the limit's length over every grant, the way a strict sliding-window server counts; "per window"
cuts fixed windows from the first grant, the way a fixed-window server would.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from lswh_core.ratelimits import parse_limits
from tests.support.procs import Proc, RedisServer, python_module, wait_until
from workers.langsmith.budget import SAFETY_MARGIN_SECONDS

ROUTE = "run_query"


def _lines(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


def _most_in_any_window(times: Sequence[float], window: float) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def run(processes: int, limit_text: str, windows: int) -> list[str]:
    limit = parse_limits(f"{ROUTE}={limit_text}")[ROUTE]
    per_process = max(1, limit.requests * windows // processes)
    server = RedisServer()
    procs: list[Proc] = []
    try:
        connection = redis.Redis.from_url(server.url)
        api_key, start_key = f"lsv2-bench-{uuid.uuid4().hex}", "bench:budget:start"
        procs = [python_module("tests.support.budget_draw", server.url, api_key, f"{ROUTE}={limit_text}",
                               str(SAFETY_MARGIN_SECONDS), start_key, f"draw:{ROUTE}:{per_process}",
                               name="budget-draw") for _ in range(processes)]
        for proc in procs:
            wait_until(lambda proc=proc: any(line.get("ready") for line in _lines(proc)), timeout=60,
                       what="drawer ready")
        started = time.monotonic()
        connection.rpush(start_key, *["go"] * processes)
        deadline = (windows + 2) * (limit.window_seconds + SAFETY_MARGIN_SECONDS) + 30
        for proc in procs:
            wait_until(lambda proc=proc: any(line.get("done") for line in _lines(proc)) or not proc.alive(),
                       timeout=deadline, interval=0.1, what="drawer done")
        elapsed = time.monotonic() - started
        outputs = [[line for line in _lines(proc) if "at" in line] for proc in procs]
    finally:
        for proc in procs:
            proc.stop()
        server.stop()

    grants = [line for output in outputs for line in output]
    times = sorted(line["at"] for line in grants)
    tries = sum(line["tries"] for line in grants)
    first = times[0]
    per_window = [0] * (int((times[-1] - first) // limit.window_seconds) + 1)
    for t in times:
        per_window[int((t - first) // limit.window_seconds)] += 1
    most = _most_in_any_window(times, limit.window_seconds)
    return [
        f"### Shared rate budget: {processes} processes, {ROUTE} limit {limit}",
        "",
        "| processes | limit | grants | most in any window (limit) | Redis calls per grant | seconds |",
        "|---|---|---|---|---|---|",
        f"| {processes} | {limit} | {len(grants)} | {most} ({limit.requests}) | {tries / len(grants):.2f} "
        f"| {elapsed:.1f} |",
        "",
        f"Grants per fixed {limit.window_seconds:g} s window from the first grant: "
        f"{', '.join(str(n) for n in per_window)}.",
        f"Grants per process: {', '.join(str(len(output)) for output in outputs)}.",
        f"Verdict: {'under the limit in every window' if most <= limit.requests else 'OVER THE LIMIT'}.",
    ]


def main(argv: Sequence[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="15 per 2 s, 3 windows (about 10 s)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--limit", default=None, help="count/window as in LSWH_LANGSMITH_RATE_LIMITS (15/10s)")
    parser.add_argument("--windows", type=int, default=3, help="draw about this many windows' worth")
    args = parser.parse_args(argv)
    limit = args.limit or ("15/2s" if args.quick else "15/10s")
    lines = run(args.processes, limit, args.windows)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
