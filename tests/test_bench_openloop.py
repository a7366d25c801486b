"""The fixed-rate load generators of bench/: every request answered once, a fresh run id each,
and a server stall charged to the requests scheduled during it (no coordinated omission).

Against a real server: bench/apps/stall.py, a raw ASGI app under uvicorn that blocks its event
loop once for STALL_MS, counts the POSTs and the distinct run ids it received.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench import load
from tests.support.procs import Proc, free_port, wait_http

RATE = 200
SECONDS = 1.0
STALL_MS = 300
REQUESTS = int(RATE * SECONDS)


class StallServer:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = Proc([sys.executable, "-m", "uvicorn", "bench.apps.stall:app", "--host", "127.0.0.1",
                          "--port", str(self.port), "--no-access-log", "--log-level", "warning"],
                         env=env, name="stall-app")
        wait_http(f"http://127.0.0.1:{self.port}/healthz", self.proc, timeout=30)

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json())


@pytest.fixture
def stalling_server() -> Iterator[StallServer]:
    """Stalls once, at the middle request of a run."""
    server = StallServer({"BENCH_STALL_AT": str(REQUESTS // 2), "BENCH_STALL_MS": str(STALL_MS)})
    yield server
    server.proc.stop()


@pytest.fixture(scope="module")
def binary() -> Path:
    built = load.openloop_binary()
    if built is None:
        pytest.skip("no C compiler (cc or gcc) on PATH builds bench/openloop.c; the bench falls back to Python")
    return built


@pytest.mark.timeout(60)
def test_c_generator_answers_every_request_once_and_charges_the_stall(binary: Path,
                                                                      stalling_server: StallServer) -> None:
    r = load.open_loop_c(binary, "127.0.0.1", stalling_server.port, "/webhooks/langsmith?secret=x",
                         rate=RATE, seconds=SECONDS, warm_connections=4)
    assert r.generator == load.C_GENERATOR
    assert (r.sent, r.requests, r.errors) == (REQUESTS, REQUESTS, 0)
    assert r.statuses == {202: REQUESTS}
    assert r.duplicates == 0
    assert stalling_server.stats() == {"posts": REQUESTS, "distinct_run_ids": REQUESTS}
    # STALL_MS * RATE / 1000 = 60 requests (30 %) were scheduled while the server stalled, waiting
    # from STALL_MS down to 0: the 20th slowest waited about STALL_MS - 20 * 5 ms. A generator that
    # stopped sending while its connections were busy (coordinated omission) would charge only
    # the few requests in flight, and its p90 would be a millisecond.
    assert r.p90_ms is not None and r.p90_ms >= 0.4 * STALL_MS
    assert r.p99_ms is not None and r.p99_ms >= 0.8 * STALL_MS
    assert r.max_ms is not None and r.max_ms >= 0.9 * STALL_MS
    assert r.p50_ms is not None and r.p50_ms < r.p99_ms


@pytest.mark.timeout(60)
def test_python_fallback_also_charges_the_stall(stalling_server: StallServer) -> None:
    r = load.open_loop("127.0.0.1", stalling_server.port, "/webhooks/langsmith?secret=x", rate=RATE,
                       seconds=SECONDS, warm_connections=4, python_generator=True)
    assert r.generator == load.PYTHON_GENERATOR
    assert (r.sent, r.requests, r.errors) == (REQUESTS, REQUESTS, 0)
    assert stalling_server.stats() == {"posts": REQUESTS, "distinct_run_ids": REQUESTS}
    assert r.p90_ms is not None and r.p90_ms >= 0.4 * STALL_MS
    assert r.p99_ms is not None and r.p99_ms >= 0.8 * STALL_MS


@pytest.mark.timeout(60)
def test_two_runs_of_the_c_generator_never_reuse_a_run_id(binary: Path) -> None:
    server = StallServer({})
    try:
        for _ in range(2):
            r = load.open_loop_c(binary, "127.0.0.1", server.port, "/", rate=RATE, seconds=0.5, warm_connections=2)
            assert r.statuses == {202: RATE // 2}
        assert server.stats() == {"posts": RATE, "distinct_run_ids": RATE}
    finally:
        server.proc.stop()


def test_generator_errors_are_listed_by_kind_beside_the_statuses() -> None:
    line = ('OPENLOOP_JSON {"sent": 10, "completed": 7, "errors": 3, "error_kinds": {"connect": 0, '
            '"connection_cap": 0, "closed": 2, "bad_response": 0, "timeout": 1}, "statuses": {"202": 6, "503": 1}, '
            '"duplicates": 0, "p50_us": 1500, "p90_us": 2000, "p99_us": 9000, "p999_us": 9000, "max_us": 9000, '
            '"duration_us": 1000000, "client_cpu_s": 0.010, "late_sends": 2, "max_late_us": 3500, '
            '"connections_opened": 3, "max_open": 3}')
    r = load.parse_openloop(line)
    assert r.statuses == {202: 6, 503: 1, "closed": 2, "timeout": 1}
    assert (r.sent, r.requests, r.errors, r.p50_ms, r.p90_ms, r.p99_ms) == (10, 7, 3, 1.5, 2.0, 9.0)
    assert "2 sends" in r.lateness() and "3.5 ms" in r.lateness()


def test_no_latency_means_no_percentile() -> None:
    line = ('OPENLOOP_JSON {"sent": 1, "completed": 0, "errors": 1, "error_kinds": {"connect": 1, '
            '"connection_cap": 0, "closed": 0, "bad_response": 0, "timeout": 0}, "statuses": {}, "duplicates": 0, '
            '"p50_us": -1, "p90_us": -1, "p99_us": -1, "p999_us": -1, "max_us": -1, "duration_us": 5, '
            '"client_cpu_s": 0.0, "late_sends": 0, "max_late_us": 0, "connections_opened": 0, "max_open": 0}')
    r = load.parse_openloop(line)
    assert (r.p50_ms, r.max_ms, r.lateness()) == (None, None, "")
    assert r.statuses == {"connect": 1}
