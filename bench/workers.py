"""Workers: a 1,000-run delivery from POST to the last example, ours against the docs'
approach and an asyncio floor (on httpx's pool and on the worker's aiohttp transport), side
by side; then 1 worker against 4.

    python -m bench.workers [--quick] [--rounds N] [--runs N] [--sweep 8,16,32] [--profile FILE]

The LangSmith stand-in adds --latency-ms to every API and S3 request (20 ms, 200 ms for the
scaling part). Inputs and outputs come by presigned URL; every second run has feedback,
every fourth a correction (half strings, half dicts), so those runs' outputs are not fetched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import load
from bench.payloads import fixture_text
from bench.servers import ROOT, SECRET, cpu_seconds, loadavg, rss_mb, shipped_ingress, tree_pids
from lswh_core import contract
from tests.support.procs import Proc, RedisServer, free_port, wait_http
from workers.runtime import S3_CONCURRENCY

API_KEY = "lsv2-standin-key"
DATASET = "bench-examples"
TRANSPORTS = ("httpx", "aiohttp")  # the floor's S3 client: httpx's own pool; the worker's (workers.fetch.s3, aiohttp)
TEXT = "The quick brown fox jumps over the lazy dog. " * 10  # ~450 bytes per field


@dataclass
class Settings:
    rounds: int = 3
    runs: int = 1000
    latency_ms: int = 20
    floor_sweep: tuple[int, ...] = (8, 16, 32, 64, 128)
    floor_concurrency: int = S3_CONCURRENCY  # the floor fetches at the pipeline's concurrency
    scale_latency_ms: int = 200
    scale_deliveries: int = 20
    scale_runs: int = 100
    scale_workers: int = 4
    docs_rounds: int = 3
    docs_runs: int = 1000
    profile: Path | None = None  # py-spy's collapsed stacks of the worker, first round
    scaling: bool = True

    @classmethod
    def quick(cls) -> Settings:
        return cls(rounds=1, runs=200, floor_sweep=(32,), scale_deliveries=8, scale_runs=25,
                   docs_rounds=1, docs_runs=100)


class Standin:
    def __init__(self, latency_ms: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Throughput, not LangSmith's limits (bench/langsmith_reads.py measures those): limits off.
        self.proc = Proc([sys.executable, "-m", "lswh_standin", "--port", str(self.port), "--no-limits",
                          "--latency-ms", str(latency_ms)], name="bench-standin", cwd=ROOT)
        wait_http(f"{self.url}/info", self.proc, timeout=30)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"/_admin/{path}", json=body)
        response.raise_for_status()
        return response.json()

    def reset(self, latency_ms: int) -> None:
        self.admin("POST", "reset", {})
        self.admin("POST", "latency", {"ms": latency_ms})

    def example_count(self, dataset: str) -> int:
        return sum(d["example_count"] for d in self.admin("GET", "datasets") if d["name"] == dataset)

    def requests(self) -> tuple[int, dict[str, int]]:
        stats = self.admin("GET", "stats")
        return int(stats["total"]), dict(stats["requests"])

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()


def make_delivery(standin: Standin, runs: int) -> dict[str, Any]:
    """Runs whose inputs and outputs are presigned objects on the stand-in, their feedback
    preloaded (every 2nd run; every 4th with a correction), and the runs themselves (so the
    API fallback would find them)."""
    fixture = json.loads(fixture_text())
    proto = fixture["runs"][0]
    out_runs, feedback = [], []
    for i in range(runs):
        run_id = str(uuid.uuid4())
        urls = {}
        for name, body in (("inputs", {"question": f"{i}: {TEXT}"}), ("outputs", {"answer": f"{i}: {TEXT}"})):
            obj = standin.admin("POST", "s3", {"body": body, "expires_in": 6 * 3600})
            urls[name] = {"ROOT": {"presigned_url": obj["url"], "s3_url": obj["s3_url"]}}
        out_runs.append({**proto, "id": run_id, "trace_id": run_id, "name": f"run-{i}",
                         "inputs": None, "outputs": None,
                         "inputs_s3_urls": urls["inputs"], "outputs_s3_urls": urls["outputs"]})
        if i % 2 == 0:
            item: dict[str, Any] = {"run_id": run_id, "key": "correctness", "score": i % 3 == 0}
            if i % 4 == 0:
                item["correction"] = f"corrected {i}" if i % 8 == 0 else {"answer": f"corrected {i}"}
            feedback.append(item)
    for i in range(0, len(feedback), 500):
        standin.admin("POST", "feedback", feedback[i:i + 500])
    standin.admin("POST", "runs", [{**r, "inputs": {"question": "api"}, "outputs": {"answer": "api"}}
                                  for r in out_runs])
    return {**fixture, "runs": out_runs}


@dataclass
class Measure:
    seconds: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    rss_peak_mb: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    detail: dict[str, int] = field(default_factory=dict)

    def runs_per_s(self, runs: int) -> float:
        return runs / load.median(self.seconds)


def baseline(module: str, delivery_path: str, standin: Standin, s: Settings, runs: int,
             extra: tuple[str, ...] = ()) -> tuple[float, int, dict[str, int], float]:
    """Seconds, stand-in requests (total and by route), and the baseline's own CPU seconds."""
    standin.reset(s.latency_ms)
    env = {"LANGSMITH_ENDPOINT": standin.url, "LANGSMITH_API_KEY": API_KEY, "LANGSMITH_TRACING": "false"}
    proc = Proc([sys.executable, "-m", module, delivery_path, DATASET, *extra], env=env,
                name=module.rsplit(".", 1)[-1], cwd=ROOT)
    code = proc.popen.wait(timeout=1800)
    out = proc.output()
    proc.stop()
    if code != 0:
        raise RuntimeError(f"{module} failed:\n{out}")
    result = json.loads(out.strip().splitlines()[-1])
    written = standin.example_count(DATASET)
    if written != runs:
        raise RuntimeError(f"{module} wrote {written} examples, expected {runs}")
    total, detail = standin.requests()
    return float(result["seconds"]), total, detail, float(result["cpu_s"])


class Pipeline:
    """Our ingress and N `lswh worker` processes on one Redis and the stand-in."""

    def __init__(self, server: RedisServer, standin: Standin) -> None:
        self.server = server
        self.standin = standin
        self.redis = redis.Redis.from_url(server.url)
        self.ingress, self.port = shipped_ingress(server.url, name="bench-ingress")  # `lswh ingress` as shipped
        self.http = httpx.Client(timeout=60)
        self.env = {"REDIS_URL": server.url, "LANGSMITH_ENDPOINT": standin.url, "LANGSMITH_API_KEY": API_KEY,
                    "LSWH_DATASET": DATASET, "LSWH_S3_ALLOWED_HOSTS": standin.url, "LANGSMITH_TRACING": "false",
                    "LSWH_SECRETS": SECRET}

    def start_workers(self, n: int) -> list[Proc]:
        workers = [Proc([sys.executable, "-m", "lswh.cli", "worker"], env=self.env, name=f"bench-worker{i}",
                        cwd=ROOT) for i in range(n)]
        deadline = time.monotonic() + 60
        while self.redis.scard("rq:workers") < n:
            for w in workers:
                if not w.alive():
                    raise RuntimeError(f"worker exited:\n{w.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not register")
            time.sleep(0.05)
        return workers

    def deliver(self, delivery: bytes) -> str:
        response = self.http.post(f"http://127.0.0.1:{self.port}/webhooks/langsmith?secret={SECRET}",
                                  content=delivery)
        if response.status_code != 202 or response.json()["duplicate"]:
            raise RuntimeError(f"ingress answered {response.status_code} {response.text}")
        return str(response.json()["delivery_id"])

    def measure(self, deliveries: list[bytes], expected: int, workers_n: int,
                latency_ms: int, profile: Path | None = None) -> tuple[float, float, float]:
        """Seconds from the first POST to the last example, peak worker RSS (MB), worker CPU s."""
        self.redis.flushall()
        self.standin.reset(latency_ms)
        workers = self.start_workers(workers_n)
        peak = [0.0]
        stop = threading.Event()

        def poll_rss() -> None:
            while not stop.is_set():
                for w in workers:
                    try:
                        peak[0] = max(peak[0], sum(rss_mb(p) for p in tree_pids(w.pid)))
                    except OSError:
                        pass
                stop.wait(0.05)

        poller = threading.Thread(target=poll_rss, daemon=True)
        poller.start()
        spy = None
        if profile is not None:
            # --nonblocking: the default pauses the process for every sample (2.3 s became 6 s).
            # Beside this Python (pip install py-spy into the venv), else wherever PATH has it.
            beside = Path(sys.executable).with_name("py-spy")
            spy_exe = str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"
            spy = Proc([spy_exe, "record", "--rate", "200", "--format", "raw",
                        "--nonblocking", "--threads", "--idle", "-o", str(profile),
                        "--pid", str(workers[0].pid)], name="bench-py-spy")
            time.sleep(1.0)
        cpu_before = sum(cpu_seconds(w.pid) for w in workers)
        try:
            start = time.perf_counter()
            ids = [self.deliver(d) for d in deliveries]
            keys = [f"rq:job:{contract.delivery_job_id(i)}" for i in ids]
            deadline = time.monotonic() + 1800
            while True:
                statuses = [self.redis.hget(k, "status") for k in keys]
                if all(st in (b"finished", b"failed") for st in statuses):
                    if self.standin.example_count(DATASET) >= expected:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"examples: {self.standin.example_count(DATASET)}/{expected}, "
                                       f"jobs {statuses}")
                time.sleep(0.01)
            elapsed = time.perf_counter() - start
            cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
        finally:
            stop.set()
            poller.join()
            if spy is not None:
                spy.signal_group(2)  # SIGINT: py-spy writes its profile and exits
                spy.popen.wait(30)
            for w in workers:
                w.stop()
        self.redis.delete("rq:workers")
        return elapsed, peak[0], cpu

    def stop(self) -> None:
        self.http.close()
        self.ingress.stop()
        self.redis.close()


def _fmt(x: float, spec: str = ".1f") -> str:
    return format(x, spec)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def run(s: Settings) -> list[str]:
    server = RedisServer()
    standin = Standin(s.latency_ms)
    pipeline = None
    tmp = Path(tempfile.mkdtemp(prefix="lswh-bench-"))
    try:
        print(f"loading {s.runs} runs into the stand-in", flush=True)
        delivery = make_delivery(standin, s.runs)
        big_path = tmp / "delivery.json"
        big_path.write_text(json.dumps(delivery))
        docs_delivery = {**delivery, "runs": delivery["runs"][:s.docs_runs]}
        docs_path = tmp / "docs_delivery.json"
        docs_path.write_text(json.dumps(docs_delivery))
        body = json.dumps(delivery).encode()
        pipeline = Pipeline(server, standin)

        docs, ours = Measure(), Measure()
        floors = {t: Measure() for t in TRANSPORTS}
        sweep: dict[str, dict[int, list[float]]] = {t: {c: [] for c in s.floor_sweep} for t in TRANSPORTS}
        for rnd in range(s.rounds):
            print(f"round {rnd + 1}/{s.rounds} ({s.runs} runs, stand-in latency {s.latency_ms} ms, "
                  f"load {loadavg()})", flush=True)
            # The sweep's other concurrencies in the first round only; the chosen one every round.
            for transport, floor in floors.items():
                for c in s.floor_sweep if rnd == 0 else (s.floor_concurrency,):
                    seconds, total, detail, cpu = baseline("bench.baselines.floor", str(big_path), standin, s,
                                                           s.runs, ("--concurrency", str(c), "--transport", transport))
                    sweep[transport][c].append(seconds)
                    if c == s.floor_concurrency:
                        floor.seconds.append(seconds)
                        floor.requests.append(total)
                        floor.cpu_s.append(cpu)
                        floor.detail = detail
                    print(f"  floor {transport:<7s} c={c:<3d} {s.runs / seconds:7.1f} runs/s ({seconds:.2f} s, "
                          f"{total} requests, CPU {cpu:.2f} s)", flush=True)
            profile = s.profile if rnd == 0 else None
            elapsed, peak, cpu = pipeline.measure([body], s.runs, 1, s.latency_ms, profile)
            total, detail = standin.requests()
            ours.seconds.append(elapsed)
            ours.requests.append(total)
            ours.rss_peak_mb.append(peak)
            ours.cpu_s.append(cpu)
            ours.detail = detail
            print(f"  ours                {s.runs / elapsed:7.1f} runs/s ({elapsed:.2f} s, {total} requests, "
                  f"worker RSS peak {peak:.0f} MB, worker CPU {cpu:.2f} s)", flush=True)
            if rnd < s.docs_rounds:
                seconds, total, detail, cpu = baseline("bench.baselines.docs_approach", str(docs_path),
                                                       standin, s, s.docs_runs)
                docs.seconds.append(seconds)
                docs.requests.append(total)
                docs.cpu_s.append(cpu)
                docs.detail = detail
                print(f"  docs                {s.docs_runs / seconds:7.1f} runs/s ({seconds:.2f} s, {total} requests, "
                      f"CPU {cpu:.2f} s)", flush=True)

        print(f"scaling: {s.scale_deliveries} deliveries of {s.scale_runs} runs, stand-in latency "
              f"{s.scale_latency_ms} ms", flush=True)
        scale_delivery = {**delivery, "runs": delivery["runs"][:s.scale_runs]}
        scale_bodies = []
        for _ in range(s.scale_deliveries):
            # A distinct body per delivery (else a duplicate); the same runs, so the same examples.
            scale_bodies.append(json.dumps({**scale_delivery, "rule_id": str(uuid.uuid4())}).encode())
        scale: dict[int, list[float]] = {1: [], s.scale_workers: []}
        for _ in range(s.rounds if s.scaling else 0):
            for n in scale:
                bodies = [json.dumps({**scale_delivery, "runs": [{**r, "id": str(uuid.uuid4())} for r in
                                                                  scale_delivery["runs"]]}).encode()
                          for _ in range(s.scale_deliveries)]
                elapsed, peak, _ = pipeline.measure(bodies, s.scale_deliveries * s.scale_runs, n,
                                                    s.scale_latency_ms)
                scale[n].append(elapsed)
                print(f"  {n} worker(s): {elapsed:.2f} s ({s.scale_deliveries * s.scale_runs / elapsed:.1f} runs/s)",
                      flush=True)
    finally:
        if pipeline is not None:
            pipeline.stop()
        standin.stop()
        server.stop()

    return table(s, docs, floors, ours, sweep, scale)


def table(s: Settings, docs: Measure, floors: dict[str, Measure], ours: Measure,
          sweep: dict[str, dict[int, list[float]]], scale: dict[int, list[float]]) -> list[str]:
    floor, aio = floors["httpx"], floors["aiohttp"]
    ours_rps, floor_rps, docs_rps = ours.runs_per_s(s.runs), floor.runs_per_s(s.runs), docs.runs_per_s(s.docs_runs)
    aio_rps = aio.runs_per_s(s.runs)
    lines = [f"### Workers ({s.runs}-run delivery, presigned inputs/outputs, feedback on every 2nd run, "
             f"stand-in latency {s.latency_ms} ms, S3 concurrency {s.floor_concurrency}, medians of {s.rounds} "
             f"rounds; docs' approach on {s.docs_runs} runs, {s.docs_rounds} rounds)", "",
             "| measure | docs' approach | floor (httpx) | floor (aiohttp) | ours (1 worker) | target | met |",
             "|---|---:|---:|---:|---:|---|---|"]

    def row(name: str, cells: list[str], target: str = "", met: str = "") -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} | {met} |")

    def each(m: Measure) -> str:
        return " / ".join(_fmt(x, ".2f") for x in m.seconds)

    def per1000(m: Measure, values: Sequence[float], runs: int) -> str:
        return f"{load.median(values) * 1000 / runs:.{0 if values is m.requests else 2}f}"

    row("runs/s (ours: per worker process), median", [f"{docs_rps:.1f}", f"{floor_rps:.1f}", f"{aio_rps:.1f}",
                                                      f"{ours_rps:.1f}"])
    row("seconds, POST (or start) to last example, each round", [each(docs), each(floor), each(aio), each(ours)])
    # The target is judged against the floor on the same I/O stack as ours (the worker's S3 GETs
    # go through workers.fetch.s3.ObjectStore on aiohttp); the httpx floor is the reference.
    row("ours / floor (aiohttp), the target's floor", ["", "", "", f"{ours_rps / aio_rps:.2f}x"], ">= 0.9x",
        _yes(ours_rps / aio_rps >= 0.9))
    row("ours / floor (aiohttp), each round (same moment, so least touched by the machine's load)",
        ["", "", "", " / ".join(f"{a / o:.2f}x" for a, o in zip(aio.seconds, ours.seconds, strict=True))])
    row("ours / floor (httpx), for reference", ["", "", "", f"{ours_rps / floor_rps:.2f}x"], "(>= 0.7x)",
        _yes(ours_rps / floor_rps >= 0.7))
    row("ours / docs' approach", ["", "", "", f"{ours_rps / docs_rps:.1f}x"], ">= 15x",
        _yes(ours_rps / docs_rps >= 15))
    row("floor / docs' approach", ["", f"{floor_rps / docs_rps:.1f}x", f"{aio_rps / docs_rps:.1f}x", ""])
    row("LangSmith + S3 requests per 1,000 runs", [per1000(docs, docs.requests, s.docs_runs),
                                                   per1000(floor, floor.requests, s.runs),
                                                   per1000(aio, aio.requests, s.runs),
                                                   per1000(ours, ours.requests, s.runs)])
    row("client CPU s per 1,000 runs (ours: worker process)", [per1000(docs, docs.cpu_s, s.docs_runs),
                                                               per1000(floor, floor.cpu_s, s.runs),
                                                               per1000(aio, aio.cpu_s, s.runs),
                                                               per1000(ours, ours.cpu_s, s.runs)])
    row("worker RSS peak MB", ["", "", "", f"{max(ours.rss_peak_mb):.0f}"], "< 250 MB",
        _yes(max(ours.rss_peak_mb) < 250))
    s1, sn = load.median(scale[1]), load.median(scale[s.scale_workers])
    ratio = s1 / sn
    lines += [] if not s.scaling else [
              "", f"Scaling (stand-in latency {s.scale_latency_ms} ms, {s.scale_deliveries} deliveries of "
              f"{s.scale_runs} runs, POST of all to the last example, medians of {s.rounds}):", "",
              "| workers | seconds | runs/s | speed-up | target | met |", "|---:|---:|---:|---:|---|---|",
              f"| 1 | {s1:.2f} | {s.scale_deliveries * s.scale_runs / s1:.1f} | 1.00x | | |",
              f"| {s.scale_workers} | {sn:.2f} | {s.scale_deliveries * s.scale_runs / sn:.1f} | {ratio:.2f}x | "
              f">= 2.5x | {_yes(ratio >= 2.5)} |"]
    if len(s.floor_sweep) > 1:
        lines += ["", f"Floor by S3 concurrency (pool = semaphore = c; {s.runs} runs, runs/s, first round):", "",
                  "| transport | " + " | ".join(f"c={c}" for c in s.floor_sweep) + " |",
                  "|---|" + "---:|" * len(s.floor_sweep)]
        lines += [f"| {t} | " + " | ".join(f"{s.runs / v[0]:.1f}" for v in by_c.values()) + " |"
                  for t, by_c in sweep.items()]
    lines += ["", "Requests by route per delivery (last round):", "",
              f"- docs' approach: {json.dumps(docs.detail)}", f"- floor (httpx): {json.dumps(floor.detail)}",
              f"- floor (aiohttp): {json.dumps(aio.detail)}", f"- ours: {json.dumps(ours.detail)}"]
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--docs-runs", type=int)
    parser.add_argument("--sweep", help="floor S3 concurrencies to measure, e.g. 8,16,32,64,128")
    parser.add_argument("--no-scaling", action="store_true", help="skip 1 worker against 4")
    parser.add_argument("--profile", type=Path, help="write py-spy collapsed stacks of the worker here")
    args = parser.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    if args.rounds:
        s.rounds = args.rounds
        s.docs_rounds = min(s.docs_rounds, args.rounds)
    if args.runs:
        s.runs = args.runs
    if args.docs_runs:
        s.docs_runs = args.docs_runs
    s.docs_runs = min(s.docs_runs, s.runs)
    s.profile = args.profile
    s.scaling = not args.no_scaling
    if args.sweep:
        s.floor_sweep = tuple(int(c) for c in args.sweep.split(","))
    if s.floor_concurrency not in s.floor_sweep:
        s.floor_sweep = (*s.floor_sweep, s.floor_concurrency)
    lines = run(s)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
