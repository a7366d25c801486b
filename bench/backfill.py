"""`lswh backfill` of a rule's backlog under LangSmith Cloud's limits, against a baseline measured in
the same run.

    python -m bench.backfill [--rounds 3] [--runs 10000] [--workers 2] [--baseline-rounds 1]
                             [--baseline-rev REV] [--no-baseline] [--input-kb 0]

The backlog (tests/support/backfill_load.py): N runs of one rule whose inputs and outputs only the
API has, 20 % corrected by feedback, 10 % already delivered and written before the backfill. The
stand-in enforces Cloud's per-key table (standin/lswh_standin/limits.py, the v2 rows of
langchain-ai/docs#5652 included) and counts every request; the pipeline runs with its default
budgets (`LSWH_LANGSMITH_RATE_LIMITS` unset), `--workers` `lswh worker` processes, one Redis.

The time is `lswh backfill`'s, from start to exit: listing, enqueueing and waiting until every run
has its outcome. Each round seeds a project of its own and starts a fresh pipeline (its own API key,
Redis database and dataset). The baseline is the same command and workers from `--baseline-rev`
(a git revision of this repository, exported with `git archive` and put first on PYTHONPATH), on
the same stand-in in the same run: what the code did before. "budget floor" is the least time the
requests sent would need under the budgets alone (per route: requests beyond one window's count,
at the route's rate); a wall time far above it is bounded by the workers, not the budget.
Peak RSS is the kernel's high-water mark (VmHWM) of the `lswh backfill` process (polled while it
runs) and of each worker (at the end, seeding included). `--input-kb 256` gives every run a
256 KB input, to see memory where a listing page or a body would be large.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path

from lswh_core.ratelimits import DEFAULT_LIMITS, RUN_QUERY, RUN_READ, V2_RUN_QUERY, V2_RUN_READ, Limit, route_of
from tests.support.backfill_load import Measured, backfill, seed, verify
from tests.support.procs import ROOT, RedisServer
from tests.support.stack import Pipeline, StandIn, fresh_key

TARGET_SECONDS = 30.0
TARGET_REQUESTS = 30.0
# What the baseline revision budgeted: the v2 query and retrieve as the v1 run query and lookup.
BASELINE_LIMITS: Mapping[str, Limit] = {**DEFAULT_LIMITS, V2_RUN_QUERY: DEFAULT_LIMITS[RUN_QUERY],
                                        V2_RUN_READ: DEFAULT_LIMITS[RUN_READ]}


def export(rev: str) -> Path:
    """The tree of `rev`, as files in a temporary directory (never a checkout of this one)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True,
                             check=True).stdout
    where = Path(tempfile.mkdtemp(prefix=f"bench-backfill-{rev.replace('/', '-')}-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


def budget_floor(per_route: dict[str, int], limits: Mapping[str, Limit] = DEFAULT_LIMITS) -> float:
    """Seconds the budgets alone impose on these requests (stand-in route labels -> budget routes)."""
    counts: dict[str, int] = {}
    for label, n in per_route.items():
        method, _, path = label.partition(" ")
        route = route_of(method, path.replace("{run_id}", "00000000-0000-4000-8000-000000000000"))
        counts[route] = counts.get(route, 0) + n
    floor = 0.0
    for route, n in counts.items():
        limit = limits.get(route)
        if limit is not None and n > limit.requests:
            floor = max(floor, (n - limit.requests) / limit.requests * limit.window_seconds)
    return floor


def one(redis_server: RedisServer, standin: StandIn, db: int, runs: int, workers: int,
        pythonpath: Path | None, input_kb: int) -> Measured:
    env = {"PYTHONPATH": str(pythonpath)} if pythonpath else {}
    stack = Pipeline(redis_server, standin, db=db, workers=workers, LANGSMITH_API_KEY=fresh_key(), **env)
    try:
        scenario = seed(stack, runs, timeout=600, input_kb=input_kb)
        measured = backfill(stack, scenario, timeout=1800)
        if measured.returncode != 0:
            raise RuntimeError(f"lswh backfill exited {measured.returncode}: {measured.stderr[-2000:]}")
        verify(stack, scenario, input_kb)
        return measured
    finally:
        stack.stop()


def row(name: str, results: list[Measured], limits: Mapping[str, Limit] = DEFAULT_LIMITS) -> str:
    seconds = statistics.median(r.seconds for r in results)
    runs = results[0].runs
    per_1000 = statistics.median(r.requests_per_1000 for r in results)
    floor = statistics.median(budget_floor(r.per_route, limits) for r in results)
    backfill_mb = max(r.backfill_peak_mb for r in results)
    worker_mb = max(max(r.worker_peak_mb, default=0.0) for r in results)
    return (f"| {name} | {len(results)} | {seconds:.1f} s ({', '.join(f'{r.seconds:.1f}' for r in results)}) | "
            f"{runs * 60 / seconds:,.0f} | {per_1000:.1f} | {sum(r.rate_limited for r in results)} | {floor:.1f} s "
            f"| {backfill_mb:.0f} MB | {worker_mb:.0f} MB |")


def run(rounds: int, runs: int, workers: int, baseline_rev: str | None, baseline_rounds: int,
        input_kb: int = 0) -> list[str]:
    baseline_path = export(baseline_rev) if baseline_rev else None
    redis_server = RedisServer()
    standin = StandIn()
    ours: list[Measured] = []
    base: list[Measured] = []
    try:
        for i in range(rounds):
            ours.append(one(redis_server, standin, 30 + i, runs, workers, None, input_kb))
            print(f"round {i + 1}: ours {ours[-1].seconds:.1f} s, {ours[-1].requests_per_1000:.1f} req/1,000, "
                  f"429: {ours[-1].rate_limited}", flush=True)
            if baseline_path is not None and i < baseline_rounds:
                base.append(one(redis_server, standin, 40 + i, runs, workers, baseline_path, input_kb))
                print(f"round {i + 1}: baseline {base[-1].seconds:.1f} s, {base[-1].requests_per_1000:.1f} "
                      f"req/1,000, 429: {base[-1].rate_limited}", flush=True)
    finally:
        standin.stop()
        redis_server.stop()
        if baseline_path is not None:
            shutil.rmtree(baseline_path, ignore_errors=True)
    seconds = statistics.median(r.seconds for r in ours)
    per_1000 = statistics.median(r.requests_per_1000 for r in ours)
    lines = [
        f"### Backfill: {runs:,} API-only runs of one rule{f' ({input_kb} KB inputs)' if input_kb else ''}, "
        f"20 % corrected, 10 % already written; Cloud's limits, {workers} workers",
        "",
        "| code | rounds | median time (each) | runs/min | LangSmith requests / 1,000 runs | 429s | budget floor "
        "| `lswh backfill` peak RSS | worker peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("ours", ours),
    ]
    if base:
        lines.append(row(f"baseline ({baseline_rev})", base, BASELINE_LIMITS))
    lines += ["", "Requests per route, ours (median round): " + ", ".join(
        f"{k} {v}" for k, v in sorted(sorted(ours, key=lambda r: r.seconds)[len(ours) // 2].per_route.items()))]
    if base:
        base_seconds = statistics.median(r.seconds for r in base)
        base_per_1000 = statistics.median(r.requests_per_1000 for r in base)
        lines.append(f"Against the baseline: {base_seconds / seconds:.1f}x faster, "
                     f"{base_per_1000 / per_1000:.2f}x fewer requests per run.")
    met = seconds <= TARGET_SECONDS and per_1000 <= TARGET_REQUESTS and not any(r.rate_limited for r in ours)
    if runs == 10_000 and not input_kb:  # the backlog; the target is stated for it alone
        lines.append(f"Target (<= {TARGET_SECONDS:.0f} s, <= {TARGET_REQUESTS:.0f} requests per 1,000 runs, "
                     "no 429): "
                     f"{'met' if met else 'NOT MET'}.")
    print("\n".join(lines), flush=True)
    return lines


def main(argv: Sequence[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    # The last revision before the v2 budgets and the backfill that reads each run once (issue 16).
    parser.add_argument("--baseline-rev", default="7cde6a8", help="git revision measured as the baseline")
    parser.add_argument("--baseline-rounds", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--input-kb", type=int, default=0, help="add an input of this many KB to every run")
    args = parser.parse_args(argv)
    return run(args.rounds, args.runs, args.workers, None if args.no_baseline else args.baseline_rev,
               args.baseline_rounds, args.input_kb)


if __name__ == "__main__":
    main()
