"""The pipeline as a user deploys it, in real processes: Redis, the LangSmith stand-in,
the ingress under uvicorn, RQ workers. Tests talk HTTP to it."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from tests.support.procs import ROOT, Proc, RedisServer, free_port, lswh, python_module, wait_http, wait_until

if TYPE_CHECKING:
    from workers.runtime import Runtime

FIXTURE = ROOT / "standin" / "lswh_standin" / "fixtures" / "langsmith_docs_payload.json"
API_KEY = "lsv2-standin-key"
SECRET = "s3cret-for-tests"
ROTATED = "rotated-secret-2"


def fresh_key() -> str:
    """An API key the stand-in accepts, with rate-limit windows of its own."""
    return f"lsv2-standin-{uuid.uuid4()}"


@contextlib.contextmanager
def worker_runtime(redis_server: RedisServer, standin: StandIn, monkeypatch: pytest.MonkeyPatch,
                   **env: str) -> Iterator[Runtime]:
    """A worker's runtime in the test's own process, configured as a Pipeline's workers are: this
    Redis and stand-in, an API key of its own (its own rate-limit windows), the stand-in's object
    store allowed, a dataset of its own. For calling worker code directly. `env` adds or
    overrides settings (LSWH_* variables), as a worker's environment would. Its HTTP clients
    with connections on the loop (object store, LangSmith v2) are closed at the end: left to the
    garbage collector, an unclosed-transport warning fires at any later moment of the test run,
    and inside an ast.parse (pytest formats it with a traceback) CPython 3.11 then raises
    "AST constructor recursion depth mismatch" at the next import pytest rewrites."""
    from lswh_core.settings import Settings
    from workers.runtime import Runtime

    for name, value in {"REDIS_URL": redis_server.url, "LANGSMITH_ENDPOINT": standin.url,
                        "LANGSMITH_API_KEY": fresh_key(), "LSWH_S3_ALLOWED_HOSTS": f"http://127.0.0.1:{standin.port}",
                        "LSWH_DATASET": f"ds-{uuid.uuid4().hex[:8]}", **env}.items():
        monkeypatch.setenv(name, value)
    runtime = Runtime(Settings.from_env())
    try:
        yield runtime
    finally:
        runtime.run(runtime.objects.close())
        runtime.run(runtime.langsmith.v2().close())


class StandIn:
    """The LangSmith stand-in process and its admin API. LangSmith Cloud's rate limits are on unless
    `limits=False`; `flags` picks what `/info` reports (`cloud`, `v1-only`, `v2-only`)."""

    def __init__(self, latency_ms: int = 0, *, limits: bool = True, flags: str = "cloud",
                 require_header: str | None = None, info_failures: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--preload-fixture", "--flags", flags]
        if latency_ms:
            args += ["--latency-ms", str(latency_ms)]
        if not limits:
            args.append("--no-limits")
        if require_header:
            args += ["--require-header", require_header]
        if info_failures:
            args += ["--info-failures", str(info_failures)]
        self.proc = python_module("lswh_standin", *args, name="standin")
        # Waiting on /info would spend the failures it was started with: the admin API is never faulted.
        wait_http(f"{self.url}/_admin/info" if info_failures else f"{self.url}/info", self.proc)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def admin(self, method: str, path: str, payload: Any = None, **params: Any) -> Any:
        response = self.http.request(method, f"/_admin/{path}", json=payload, params=params or None)
        response.raise_for_status()
        return response.json()

    def add_runs(self, runs: list[dict[str, Any]]) -> None:
        self.admin("POST", "runs", runs)

    def add_feedback(self, items: list[dict[str, Any]]) -> None:
        self.admin("POST", "feedback", items)

    def put_object(self, body: Any, **options: Any) -> str:
        return str(self.admin("POST", "s3", {"body": body, **options})["url"])

    def examples(self, dataset: str | None = None) -> list[dict[str, Any]]:
        return self.admin("GET", "examples", **({"dataset": dataset} if dataset else {}))  # type: ignore[no-any-return]

    def examples_by_run(self, run_ids: list[str], dataset: str | None = None) -> dict[str, list[dict[str, Any]]]:
        wanted = set(run_ids)
        found: dict[str, list[dict[str, Any]]] = {}
        for example in self.examples(dataset):
            if str(example.get("source_run_id")) in wanted:
                found.setdefault(str(example["source_run_id"]), []).append(example)
        return found

    def fault(self, route: str, times: int = 1, **options: Any) -> None:
        self.admin("POST", "faults", {"route": route, "times": times, **options})

    def clear_faults(self) -> None:
        # reset would drop examples; faults are consumed, so tests add only what they use
        pending = self.admin("GET", "faults")["pending"]
        assert not pending, f"faults left unconsumed: {pending}"

    def stats(self) -> dict[str, Any]:
        """Requests per route (`requests`) and, per route, how many were answered 429 (`rate_limited`)."""
        return self.admin("GET", "stats")  # type: ignore[no-any-return]

    def rate_limited(self) -> int:
        return int(self.stats()["rate_limited_total"])

    def limits(self, *, enabled: bool | None = None, cloud: bool = False, **rows: tuple[int, float]) -> Any:
        """Lift (`enabled=False`) or restore the limits, or change rows, e.g. `run_lookup=(3, 1.0)`
        for a window a test can see end; `cloud=True` restores the docs' table."""
        body: dict[str, Any] = {"cloud": cloud, "limits": {k: {"count": c, "seconds": s} for k, (c, s) in rows.items()}}
        if enabled is not None:
            body["enabled"] = enabled
        return self.admin("POST", "limits", body)

    def use_flags(self, profile: str) -> None:
        """What `/info` reports from now on: `cloud`, `v1-only` or `v2-only`."""
        self.admin("POST", "info", {"profile": profile})

    def fail_info(self, times: int) -> None:
        """The next `times` `GET /info` answer 503."""
        self.admin("POST", "info", {"fail": times})

    def race(self, examples: list[dict[str, Any]] | None = None, *, times: int = 1,
             per_list: int | None = None) -> None:
        """After the next `times` example listings, another writer creates `examples` (or `per_list`
        of the listed ids that do not exist yet), so the pipeline's next create is refused with 409."""
        self.admin("POST", "races", {"examples": examples or [], "times": times, "per_list": per_list})

    def pending_races(self) -> list[dict[str, Any]]:
        return self.admin("GET", "races")["pending"]  # type: ignore[no-any-return]

    def add_rules(self, rules: list[dict[str, Any]]) -> list[str]:
        return self.admin("POST", "rules", rules)["ids"]  # type: ignore[no-any-return]

    def add_queue(self, name: str) -> str:
        """An annotation queue; returns its id."""
        return str(self.admin("POST", "annotation-queues", {"name": name})["id"])

    def queue_items(self, queue_id: str) -> list[dict[str, Any]]:
        return self.admin("GET", f"annotation-queues/{queue_id}/items")  # type: ignore[no-any-return]

    def runs(self) -> list[dict[str, Any]]:
        return self.admin("GET", "runs")  # type: ignore[no-any-return]

    def feedback(self) -> list[dict[str, Any]]:
        return self.admin("GET", "feedback")  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()


class Pipeline:
    """Ingress + workers on one Redis database, configured by environment like production."""

    def __init__(self, redis_server: RedisServer, standin: StandIn, *, db: int = 0, workers: int = 1,
                 **env: str) -> None:
        self.redis_url = f"redis://127.0.0.1:{redis_server.port}/{db}"
        # Each pipeline owns its database: whatever an earlier test left there (jobs queued for an
        # ingress without workers, scheduled retries) must not be run or waited for by this one.
        redis.Redis.from_url(self.redis_url).flushdb()
        self.standin = standin
        self.env = {
            "REDIS_URL": self.redis_url,
            "LSWH_SECRETS": f"{SECRET},{ROTATED}",
            "LANGSMITH_ENDPOINT": standin.url,
            # Its own key: the stand-in limits each key, and pipelines of other tests must not
            # spend this one's windows (each pipeline's budget lives in its own Redis database).
            "LANGSMITH_API_KEY": fresh_key(),
            "LSWH_S3_ALLOWED_HOSTS": f"http://127.0.0.1:{standin.port}",
            "LSWH_RETRY_BASE_SECONDS": "1",
            "LSWH_DATASET": f"ds-{uuid.uuid4().hex[:8]}",
            **env,
        }
        self.dataset = self.env["LSWH_DATASET"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ingress = lswh("ingress", "--port", str(self.port), env=self.env, name="ingress")
        wait_http(f"{self.url}/healthz", self.ingress)
        self.workers: list[Proc] = []
        for _ in range(workers):
            self.add_worker()
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.redis = redis.Redis.from_url(self.redis_url)

    def add_worker(self, **env: str) -> Proc:
        worker = lswh("worker", env={**self.env, **env}, name="worker")
        self.workers.append(worker)
        return worker

    def post(self, payload: Any, *, secret: str | None = SECRET, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        content = raw if raw is not None else json.dumps(payload).encode()
        params = {"secret": secret} if secret is not None else None
        return self.http.post("/webhooks/langsmith", content=content, params=params, headers=headers)

    def wait_examples(self, run_ids: list[str], timeout: float = 30.0) -> dict[str, list[dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        found: dict[str, list[dict[str, Any]]] = {}
        while time.monotonic() < deadline:
            found = self.standin.examples_by_run(run_ids, self.dataset)
            if len(found) == len(set(run_ids)):
                return found
            time.sleep(0.1)
        missing = set(run_ids) - set(found)
        raise TimeoutError(f"no example for {len(missing)} runs, e.g. {sorted(missing)[:3]}; "
                           f"worker output:\n{self.workers[0].output()[-3000:] if self.workers else ''}")

    def wait_accounted(self, delivery_id: str, runs: int, timeout: float = 120.0) -> dict[str, int]:
        """Wait until every run of the delivery has an outcome (received = the rest, pending 0)."""
        from workers.bookkeeping import accounting

        figures: dict[str, int] = {}

        def closed() -> bool:
            nonlocal figures
            figures = accounting.read(self.redis, delivery_id) or {}
            return figures.get("received") == runs and figures.get("pending") == 0

        wait_until(closed, timeout=timeout, interval=0.2, what=f"delivery {delivery_id} to be accounted")
        return figures

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Queue, scheduled and started registries empty."""
        from rq import Queue
        from rq.registry import ScheduledJobRegistry, StartedJobRegistry

        queue = Queue("lswh", connection=self.redis)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (queue.count == 0 and ScheduledJobRegistry(queue=queue).count == 0
                    and StartedJobRegistry(queue=queue).count == 0):
                return
            time.sleep(0.1)
        raise TimeoutError("pipeline did not go idle")

    def failed_jobs(self) -> list[Any]:
        from rq import Queue
        from rq.job import Job
        from rq.registry import FailedJobRegistry

        registry = FailedJobRegistry(queue=Queue("lswh", connection=self.redis))
        return [Job.fetch(job_id, connection=self.redis) for job_id in registry.get_job_ids()]

    def stop(self) -> None:
        self.http.close()
        for worker in self.workers:
            worker.stop()
        self.ingress.stop()
        deprecated = [line for proc in (self.ingress, *self.workers) for line in proc.deprecations()]
        assert not deprecated, f"a process of the pipeline met a deprecation: {deprecated[:3]}"


def fresh_run(**fields: Any) -> dict[str, Any]:
    """A run shaped like the docs fixture's, with new ids."""
    run = json.loads(Path(FIXTURE).read_text())["runs"][0]
    run_id = str(uuid.uuid4())
    run.update(id=run_id, trace_id=run_id, inputs=None, outputs=None)
    run.update(fields)
    return run


def s3_object(standin: StandIn, body: Any, **options: Any) -> tuple[str, str]:
    """(presigned URL, object path for fault routes) of a new object in the stand-in's S3."""
    key = f"runs/{uuid.uuid4()}.json"
    url = standin.put_object(body, key=key, **options)
    return url, f"/s3/lswh-standin/{key}"


def s3_urls(url: str) -> dict[str, Any]:
    """A run's `inputs_s3_urls` / `outputs_s3_urls` pointing at one presigned URL."""
    return {"ROOT": {"presigned_url": url, "s3_url": "s3://lswh-standin/x"}}


def delivery(runs: list[dict[str, Any]], rule_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"rule_id": rule_id or str(uuid.uuid4()), "start_time": "2024-04-05T01:28:54.734491+00:00",
            "end_time": "2024-04-05T01:28:56.492563+00:00", "runs": runs, **fields}
