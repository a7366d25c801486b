"""Helpers for the fault and abuse tests: what Redis holds, the jobs RQ keeps, HTTP servers
that must never be reached (or that misbehave on purpose)."""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis

from tests.support.procs import free_port
from tests.support.stack import Pipeline, StandIn

# RQ's own bookkeeping: registries, queue lists, worker sets. They live as long as the queue.
RQ_PERSISTENT_PREFIXES = (
    "rq:queues",
    "rq:queue:",
    "rq:workers",
    "rq:wip:",
    "rq:failed:",
    "rq:finished:",
    "rq:scheduled:",
    "rq:deferred:",
    "rq:canceled:",
    "rq:suspended",
    "rq:intermediate:",
)


def dataset_id(standin: StandIn, name: str, timeout: float = 20.0) -> str:
    """The stand-in's id of a dataset, once the pipeline has created it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for dataset in standin.admin("GET", "datasets"):
            if dataset["name"] == name:
                return str(dataset["id"])
        time.sleep(0.1)
    raise TimeoutError(f"dataset {name} was never created")


def examples_route(standin: StandIn, pipeline: Pipeline) -> str:
    """The fault route of this pipeline's example writes alone (the SDK writes multipart)."""
    return f"POST /v1/platform/datasets/{dataset_id(standin, pipeline.dataset)}/examples"


def warm_up(pipeline: Pipeline) -> None:
    """One delivery end to end: the workers are up and the dataset exists."""
    from tests.support.stack import delivery, fresh_run

    run = fresh_run(inputs={"warm": "up"}, outputs={"ok": True})
    assert pipeline.post(delivery([run])).status_code == 202
    pipeline.wait_examples([run["id"]], timeout=60)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
             detail: Callable[[], str] | None = None) -> Any:
    """The predicate's first truthy value; on timeout, the end of `detail()` (e.g. a worker's output)
    ends the error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f"\n{detail()[-4000:]}" if detail else ""))


def failed_run_job(pipeline: Pipeline, run_id: str, timeout: float = 30.0) -> Any:
    """The split-off failed job of one run, once it is in the failed registry."""

    def find() -> Any:
        for job in pipeline.failed_jobs():
            if job.id.startswith(f"run-{run_id}-"):
                return job
        return None

    return wait_for(find, timeout, f"failed job of run {run_id}")


def keys_without_ttl(client: redis.Redis) -> list[str]:
    """Every key with no expiry, apart from RQ's registries and lists, and the hashes of jobs
    still waiting or running (RQ gives a job its TTL when it ends; a periodic pass may be
    queued at any moment)."""
    found = []
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        if key.startswith(RQ_PERSISTENT_PREFIXES):
            continue
        if client.ttl(raw) == -1:
            if key.startswith("rq:job:") and client.hget(raw, "status") in (b"queued", b"started", b"scheduled"):
                continue
            found.append(key)
    return sorted(found)


def rq_texts(client: redis.Redis) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of everything RQ stores (job hashes with their pickled, compressed data
    opened up, result streams, registries, queues): what rq-dashboard can show."""
    for raw in client.scan_iter(match="rq:*", count=1000):
        key = raw.decode()
        kind = client.type(raw).decode()
        if kind == "string":
            yield key, client.get(raw) or b""
        elif kind == "hash":
            for field, value in client.hgetall(raw).items():
                yield f"{key}#{field.decode()}", value
                with contextlib.suppress(zlib.error):
                    yield f"{key}#{field.decode()}(unzipped)", zlib.decompress(value)
        elif kind == "list":
            for value in client.lrange(raw, 0, -1):
                yield key, value
        elif kind == "set":
            for value in client.smembers(raw):
                yield key, value
        elif kind == "zset":
            for value in client.zrange(raw, 0, -1):
                yield key, value
        elif kind == "stream":
            for _, entry in client.xrange(raw):
                for field, value in entry.items():
                    yield f"{key}#{field.decode()}", value
                    with contextlib.suppress(zlib.error):
                        yield f"{key}#{field.decode()}(unzipped)", zlib.decompress(value)


class _Handler(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.path.startswith("/endless"):
            self._endless()
            return
        body = b'{"from": "test-server"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _endless(self) -> None:
        """A JSON object that never ends, chunked, no Content-Length: only a size cap stops it."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b" " * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        try:
            self.wfile.write(b"1\r\n{\r\n")
            while self.server.sent < self.server.endless_limit:
                self.wfile.write(frame)
                self.server.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.server.cut_off = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    """An HTTP server in the test process that records every request it gets."""

    daemon_threads = True

    def __init__(self, endless_limit: int = 256 * 1024 * 1024) -> None:
        self.port = free_port()
        super().__init__(("127.0.0.1", self.port), _Handler)
        self.hits: list[str] = []
        self.sent = 0
        self.cut_off = False
        self.endless_limit = endless_limit
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@contextlib.contextmanager
def injected(standin: StandIn, route: str, times: int = 1, **options: Any) -> Iterator[None]:
    """A stand-in fault that the block must consume. Faults are global: whatever is left when the
    block ends (a failed test) is drained here, so it cannot fire on another test's request."""
    from tests.support.stack import API_KEY

    standin.fault(route, times=times, **options)
    failed = True
    try:
        yield
        failed = False
    finally:
        method, _, path = route.partition(" ")

        def left() -> list[dict[str, Any]]:
            return [f for f in standin.admin("GET", "faults")["pending"] if f["route"] == route]

        leftover = left()
        while left():
            standin.http.request(method, path, headers={"x-api-key": API_KEY}, timeout=60)
        if not failed:
            assert not leftover, f"fault not consumed: {leftover}"
