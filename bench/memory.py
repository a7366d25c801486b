"""Worker memory against delivery size: peak RSS of `lswh worker` and runs/s, for deliveries of
100, 1,000 and 10,000 runs whose inputs are 256 KB presigned objects.

    python -m bench.memory [--quick] [--sizes 100,1000,10000] [--object-kb 256]

Each size gets a fresh `lswh worker` started as a user starts it (logging on), so its VmHWM
(the kernel's high-water mark of resident memory) is that delivery's peak alone. The baseline,
measured in the same run, is the same worker's RSS once it has started and sits idle; the table
prints each peak as a ratio of the smallest delivery's peak, the boundedness docs/guarantees.md states.
All runs point at one object: the stand-in holds it once, the worker fetches it once per run.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.servers import ROOT, SECRET
from tests.support.procs import Proc, RedisServer, free_port, lswh, wait_http, wait_until
from tests.support.stack import delivery, fresh_run
from workers.bookkeeping import accounting


def vm(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(standin_url: str, redis_url: str, url: str, runs: int) -> dict[str, float]:
    env = {"REDIS_URL": redis_url, "LSWH_SECRETS": SECRET, "LANGSMITH_ENDPOINT": standin_url,
           "LANGSMITH_API_KEY": f"lsv2-standin-{uuid.uuid4().hex}", "LSWH_DATASET": f"mem-{uuid.uuid4().hex[:8]}",
           "LSWH_S3_ALLOWED_HOSTS": standin_url.replace("http://", "http://", 1), "LSWH_METRICS_PORT": "0"}
    port = free_port()
    ingress = lswh("ingress", "--port", str(port), env=env, name="mem-ingress")
    worker = lswh("worker", env=env, name="mem-worker")
    connection = redis.Redis.from_url(redis_url)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", ingress, timeout=30)
        wait_until(lambda: "Listening on" in worker.output(), timeout=30, what="the worker")
        idle = vm(worker.pid, "VmRSS")
        body = delivery([fresh_run(inputs=None, outputs={"a": i},
                                   inputs_s3_urls={"ROOT": {"presigned_url": url, "s3_url": "s3://b/k"}})
                         for i in range(runs)])
        started = time.monotonic()
        response = httpx.post(f"http://127.0.0.1:{port}/webhooks/langsmith", params={"secret": SECRET},
                              json=body, timeout=120)
        did = response.json()["delivery_id"]
        del body

        def landed() -> bool:
            figures = accounting.read(connection, did) or {}
            return figures.get("received") == runs and figures.get("pending") == 0

        wait_until(landed, timeout=3600, interval=0.2, what=f"{runs} runs to land")
        seconds = time.monotonic() - started
        figures = accounting.read(connection, did) or {}
        return {"idle_mb": idle, "peak_mb": vm(worker.pid, "VmHWM"), "seconds": seconds,
                "written": figures.get("written", 0), "failed": figures.get("failed", 0)}
    finally:
        worker.stop()
        ingress.stop()
        connection.close()


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 runs only")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--object-kb", type=int, default=256)
    args = parser.parse_args(argv)
    sizes = [100, 1000] if args.quick else [int(n) for n in args.sizes.split(",")]
    redis_server = RedisServer()
    port = free_port()
    standin_url = f"http://127.0.0.1:{port}"
    # Throughput and memory, not LangSmith's limits: limits off.
    standin = Proc([sys.executable, "-m", "lswh_standin", "--port", str(port), "--no-limits"],
                   name="mem-standin", cwd=ROOT)
    results: dict[int, dict[str, Any]] = {}
    try:
        wait_http(f"{standin_url}/info", standin, timeout=30)
        url = httpx.post(f"{standin_url}/_admin/s3", json={"body": {"q": "padded"}, "expires_in": 6 * 3600,
                                                          "size_bytes": args.object_kb * 1024}).json()["url"]
        for i, n in enumerate(sizes):
            results[n] = measure(standin_url, f"redis://127.0.0.1:{redis_server.port}/{i}", url, n)
            print(f"{n} runs: {results[n]}", flush=True)
    finally:
        standin.stop()
        redis_server.stop()
    base = results[sizes[0]]["peak_mb"]
    lines = [f"### Worker memory against delivery size ({args.object_kb} KB presigned inputs per run)", "",
             "| runs | objects fetched | worker idle RSS | peak RSS | peak vs smallest | runs/s | written / failed |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for n in sizes:
        r = results[n]
        lines.append(f"| {n:,} | {n * args.object_kb / 1024:,.0f} MB | {r['idle_mb']:.0f} MB | {r['peak_mb']:.0f} MB | "
                     f"{r['peak_mb'] / base:.2f}x | {n / r['seconds']:,.0f} | {r['written']:.0f} / {r['failed']:.0f} |")
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    main()
