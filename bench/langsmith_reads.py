"""API-only runs under LangSmith Cloud's limits: `lswh worker` as shipped against one read per run.

    python -m bench.langsmith_reads [--quick] [--runs N] [--baseline-seconds S]

Runs shaped like the docs' example payload (inputs, outputs and S3 URLs null: only the API has
them) are delivered to `lswh ingress` and processed by one `lswh worker`, against the stand-in
with Cloud's per-key limits on. The baseline is what the pipeline did before its bulk reads: one
`GET /runs/{id}` per run (as `Client.read_run` sends it), by a client that waits out each 429
and tries again. Landing 1,000 runs that way takes over half an hour at 30 reads a minute, so
the baseline runs for `--baseline-seconds` and its time for N runs is its measured rate
extrapolated; ours is measured whole.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import httpx

from bench.servers import ROOT, SECRET
from tests.support.procs import Proc, RedisServer, free_port, lswh, wait_http, wait_until
from tests.support.stack import delivery, fresh_run

RUN_READS = ("POST /api/v2/runs/query", "POST /runs/query", "GET /runs/{run_id}", "GET /api/v2/runs/{run_id}")


class Standin:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([sys.executable, "-m", "lswh_standin", "--port", str(self.port), "--flags", "cloud"],
                         name="bench-standin", cwd=ROOT)
        wait_http(f"{self.url}/info", self.proc, timeout=30)
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"/_admin/{path}", json=body)
        response.raise_for_status()
        return response.json()

    def counts(self) -> dict[str, int]:
        stats = self.admin("GET", "stats")
        requests = stats["requests"]
        api = {k: v for k, v in requests.items() if "/s3/" not in k and not k.endswith("/info")}
        return {"all": sum(api.values()),
                "reads": sum(v for k, v in api.items() if any(k.endswith(r) for r in RUN_READS)),
                "429": int(stats["rate_limited_total"])}

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()


def api_only_runs(standin: Standin, n: int) -> list[dict[str, Any]]:
    runs = [fresh_run() for _ in range(n)]
    for i in range(0, n, 500):
        standin.admin("POST", "runs", [{**r, "inputs": {"q": f"question {j}"}, "outputs": {"a": f"answer {j}"}}
                                       for j, r in enumerate(runs[i:i + 500], start=i)])
    return runs


def ours(standin: Standin, redis_url: str, runs: list[dict[str, Any]]) -> dict[str, float]:
    env = {"REDIS_URL": redis_url, "LSWH_SECRETS": SECRET, "LANGSMITH_ENDPOINT": standin.url,
           "LANGSMITH_API_KEY": f"lsv2-standin-{uuid.uuid4().hex}", "LSWH_DATASET": f"bench-{uuid.uuid4().hex[:8]}"}
    port = free_port()
    ingress = lswh("ingress", "--port", str(port), env=env, name="bench-ingress")
    worker = lswh("worker", env=env, name="bench-worker")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", ingress, timeout=30)
        import redis

        from workers.bookkeeping import accounting

        connection = redis.Redis.from_url(redis_url)
        before = standin.counts()
        started = time.monotonic()
        response = httpx.post(f"http://127.0.0.1:{port}/webhooks/langsmith", params={"secret": SECRET},
                              json=delivery(runs), timeout=60)
        did = response.json()["delivery_id"]

        def landed() -> bool:
            figures = accounting.read(connection, did) or {}
            return figures.get("received") == len(runs) and figures.get("pending") == 0

        wait_until(landed, timeout=1800, interval=0.2, what="the delivery to land")
        seconds = time.monotonic() - started
        after = standin.counts()
        figures = accounting.read(connection, did) or {}
        return {"seconds": seconds, "written": figures.get("written", 0), "failed": figures.get("failed", 0),
                **{k: after[k] - before[k] for k in before}}
    finally:
        worker.stop()
        ingress.stop()


def one_read_per_run(standin: Standin, runs: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """GET /runs/{id} per run for `seconds`, waiting a second after each 429 (LangSmith sends no
    Retry-After); returns the runs read and the requests sent."""
    key = f"lsv2-standin-{uuid.uuid4().hex}"
    read = sent = refused = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=standin.url, headers={"x-api-key": key}, timeout=30) as client:
        for run in runs:
            while time.monotonic() < deadline:
                sent += 1
                if client.get(f"/runs/{run['id']}").status_code == 200:
                    read += 1
                    break
                refused += 1
                time.sleep(1.0)
            if time.monotonic() >= deadline:
                break
    return {"seconds": seconds, "read": read, "sent": sent, "429": refused}


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m bench.langsmith_reads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 runs, a 59 s baseline")
    parser.add_argument("--runs", type=int, default=1000)
    # Just under whole minutes: GET /runs/{id} allows 30 per 60 s, so that is the sustained rate.
    parser.add_argument("--baseline-seconds", type=float, default=119.0)
    args = parser.parse_args(argv)
    n, window = (200, 59.0) if args.quick else (args.runs, args.baseline_seconds)
    redis_server = RedisServer()
    standin = Standin()
    try:
        runs = api_only_runs(standin, n)
        mine = ours(standin, redis_server.url, runs)
        base = one_read_per_run(standin, runs, window)
    finally:
        standin.stop()
        redis_server.stop()
    per_1000 = 1000 / n
    rate = base["read"] / base["seconds"] if base["read"] else float("nan")
    base_seconds = n / rate if rate else float("inf")
    other_requests = mine["all"] - mine["reads"]  # feedback, examples, dataset: the same either way
    lines = [
        f"### LangSmith reads: {n} API-only runs under Cloud's limits (stand-in, limits on)",
        "",
        "| | one read per run (before) | ours (`lswh worker`) | ratio |",
        "|---|---:|---:|---:|",
        f"| run-read requests per 1,000 runs | {1000:,.0f} | {mine['reads'] * per_1000:,.0f} | "
        f"{mine['reads'] * per_1000 / 1000:.3f}x |",
        f"| all LangSmith requests per 1,000 runs | {(n + other_requests) * per_1000:,.0f} | "
        f"{mine['all'] * per_1000:,.0f} | {mine['all'] / (n + other_requests):.3f}x |",
        f"| time to land {n:,} runs | {base_seconds:,.0f} s (measured {base['read']:.0f} reads in "
        f"{base['seconds']:.0f} s, extrapolated) | {mine['seconds']:.1f} s | "
        f"{base_seconds / mine['seconds']:,.0f}x faster |",
        f"| 429 answers | {base['429']:.0f} in {base['seconds']:.0f} s | {mine['429']:.0f} | |",
        f"| examples written / failed | | {mine['written']:.0f} / {mine['failed']:.0f} | |",
    ]
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    main()
