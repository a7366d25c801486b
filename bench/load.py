"""Load generators: wrk (closed loop, when on PATH), bench/openloop.c (fixed rate, when a C
compiler is on PATH) and small asyncio ones on raw streams (the fallbacks).

The open-loop generators schedule request i at t0 + i/rate and measure each latency from
that scheduled time, so a stalled server is charged for the requests it kept waiting
(no coordinated omission). They open a new connection whenever none is idle. The C one is
preferred: on a 2-core machine the asyncio one shares the cores with the server under test,
and its own event-loop jitter lands in the latencies it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.payloads import MARKER, template

WRK_SCRIPT = Path(__file__).with_name("wrk_fresh_runs.lua")
OPENLOOP_SOURCE = Path(__file__).with_name("openloop.c")
# Compiled once per version of the source; ignored by git.
BUILD_DIR = Path(__file__).with_name(".build")
KEEPALIVE_REUSE_SECONDS = 4.0  # uvicorn's --timeout-keep-alive is 5 s
LATE_SECONDS = 0.001  # a send this far behind its schedule is the generator's delay, not the server's
C_GENERATOR = "openloop (C, epoll+timerfd)"
PYTHON_GENERATOR = "python open loop"


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds
    generator: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    client_cpu_s: float | None = None  # CPU the generator itself used
    # Open loop only: what was scheduled and sent, the tail, and the generator's own lateness.
    sent: int | None = None
    p90_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    late_sends: int | None = None  # sends more than LATE_SECONDS behind their schedule
    max_late_ms: float | None = None
    duplicates: int | None = None  # answers saying "duplicate": true (C generator only)

    def lateness(self) -> str:
        """A note when the generator itself fell behind: its delay is in the latencies."""
        if not self.late_sends:
            return ""
        return (f"generator late: {self.late_sends} sends over {LATE_SECONDS * 1000:.0f} ms behind schedule "
                f"(max {self.max_late_ms:.1f} ms); that delay is the generator's, not the server's")

    @property
    def rps(self) -> float:
        """Accepted deliveries (202) per second; errors and other statuses do not count."""
        return self.statuses.get(202, 0) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, head: bytes, body: bytes) -> int:
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        for line in raw.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def _head(host: str, port: int, path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _bodies() -> Callable[[], bytes]:
    tmpl = template()
    return lambda: tmpl.replace(MARKER, str(uuid.uuid4())).encode()


def _run(coro):
    cpu = time.process_time()
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    result.client_cpu_s = time.process_time() - cpu
    return result


async def _closed_loop(host: str, port: int, path: str, connections: int, seconds: float | None,
                       count: int | None) -> LoadResult:
    make = _bodies()
    statuses: Counter = Counter()
    sent = 0
    errors = 0
    deadline = time.perf_counter() + (seconds or 1e9)

    async def client() -> None:
        nonlocal sent, errors
        conn = _Conn(*await asyncio.open_connection(host, port))
        try:
            while time.perf_counter() < deadline and (count is None or sent < count):
                sent += 1
                body = make()
                try:
                    statuses[await conn.post(_head(host, port, path, len(body)), body)] += 1
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    conn.close()
                    conn = _Conn(*await asyncio.open_connection(host, port))
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    return LoadResult(requests=sum(statuses.values()), seconds=elapsed, statuses=statuses, errors=errors,
                      generator="python closed loop")


def closed_loop_python(host: str, port: int, path: str, *, connections: int = 32,
                       seconds: float | None = None, count: int | None = None) -> LoadResult:
    return _run(_closed_loop(host, port, path, connections, seconds, count))


async def _open_loop(host: str, port: int, path: str, rate: float, seconds: float,
                     warm_connections: int) -> LoadResult:
    make = _bodies()
    total = int(rate * seconds)
    bodies = [make() for _ in range(total)]
    # (connection, when it was last used): uvicorn closes a keep-alive connection idle for 5 s,
    # so one idle for longer is dropped rather than reused (that would be a client-made error).
    idle: list[tuple[_Conn, float]] = [(_Conn(*await asyncio.open_connection(host, port)), time.perf_counter())
                                       for _ in range(warm_connections)]
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors = 0

    async def one(scheduled: float, body: bytes) -> None:
        nonlocal errors
        conn = None
        while idle and conn is None:
            candidate, used = idle.pop()
            if time.perf_counter() - used < KEEPALIVE_REUSE_SECONDS:
                conn = candidate
            else:
                candidate.close()
        try:
            if conn is None:
                conn = _Conn(*await asyncio.open_connection(host, port))
        except OSError as exc:
            errors += 1
            statuses[type(exc).__name__] += 1
            return
        try:
            status = await conn.post(_head(host, port, path, len(body)), body)
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors += 1
            statuses[type(exc).__name__] += 1
            conn.close()
            return
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] += 1
        idle.append((conn, time.perf_counter()))

    tasks = []
    late_sends = 0
    max_late = 0.0
    t0 = time.perf_counter() + 0.05
    for i, body in enumerate(bodies):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late = time.perf_counter() - scheduled
        max_late = max(max_late, late)
        late_sends += late > LATE_SECONDS
        tasks.append(asyncio.create_task(one(scheduled, body)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    for conn, _ in idle:
        conn.close()
    result = LoadResult(requests=len(latencies), seconds=elapsed, statuses=statuses, errors=errors,
                        latencies=latencies, generator=PYTHON_GENERATOR, sent=total, late_sends=late_sends,
                        max_late_ms=max_late * 1000)
    result.p50_ms, result.p99_ms = result.percentile(50), result.percentile(99)
    result.p90_ms, result.p999_ms = result.percentile(90), result.percentile(99.9)
    result.max_ms = max(latencies) * 1000 if latencies else None
    return result


def open_loop_python(host: str, port: int, path: str, *, rate: float = 1000, seconds: float = 10,
                     warm_connections: int = 16) -> LoadResult:
    return _run(_open_loop(host, port, path, rate, seconds, warm_connections))


@contextlib.contextmanager
def _template_file() -> Iterator[str]:
    """The delivery template (bench.payloads) in a file, for the generators that put a fresh run
    id into it per request; removed afterwards."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(template())
    try:
        yield f.name
    finally:
        os.unlink(f.name)


def openloop_binary() -> Path | None:
    """bench/openloop.c compiled with the C compiler on PATH, once per version of the source;
    None when there is no compiler or it fails (the reason goes to stderr)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = OPENLOOP_SOURCE.read_bytes()
    binary = BUILD_DIR / f"openloop-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return binary
    BUILD_DIR.mkdir(exist_ok=True)
    # Built under a private name and renamed into place: two benches starting at once never
    # run a half-written binary.
    partial = BUILD_DIR / f".{binary.name}.{os.getpid()}"
    done = subprocess.run([compiler, "-O2", "-std=gnu11", "-Wall", "-o", str(partial), str(OPENLOOP_SOURCE)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        print(f"bench: {compiler} could not build {OPENLOOP_SOURCE.name}, using the Python open loop:\n"
              f"{done.stderr}", file=sys.stderr)
        partial.unlink(missing_ok=True)
        return None
    partial.replace(binary)
    return binary


def open_loop_c(binary: Path, host: str, port: int, path: str, *, rate: float = 1000, seconds: float = 10,
                warm_connections: int = 16, drain_seconds: float = 10.0) -> LoadResult:
    """Runs the compiled bench/openloop.c and reads its one OPENLOOP_JSON line."""
    with _template_file() as body_template:
        args = [str(binary), host, str(port), path, str(rate), str(seconds), body_template, str(warm_connections),
                str(drain_seconds)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + drain_seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("OPENLOOP_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"openloop exited {done.returncode}: {done.stderr.strip()}")
    return parse_openloop(line)


def parse_openloop(line: str) -> LoadResult:
    """A LoadResult from the generator's `OPENLOOP_JSON {...}` line."""
    data = json.loads(line.removeprefix("OPENLOOP_JSON "))
    statuses: Counter = Counter({int(code): n for code, n in data["statuses"].items()})
    # Errors under their kind's name, as the Python generator lists its exceptions.
    statuses.update({kind: n for kind, n in data["error_kinds"].items() if n})

    def ms(key: str) -> float | None:
        return data[key] / 1000 if data[key] >= 0 else None

    return LoadResult(requests=data["completed"], seconds=data["duration_us"] / 1e6, statuses=statuses,
                      errors=data["errors"], generator=C_GENERATOR, p50_ms=ms("p50_us"), p99_ms=ms("p99_us"),
                      p90_ms=ms("p90_us"), client_cpu_s=data["client_cpu_s"], sent=data["sent"], p999_ms=ms("p999_us"),
                      max_ms=ms("max_us"), late_sends=data["late_sends"], max_late_ms=data["max_late_us"] / 1000,
                      duplicates=data["duplicates"])


def open_loop(host: str, port: int, path: str, *, rate: float = 1000, seconds: float = 10,
              warm_connections: int = 16, python_generator: bool = False) -> LoadResult:
    """Fixed-rate load: the C generator when a compiler can build it, else (or when asked) the
    Python one. LoadResult.generator says which ran."""
    binary = None if python_generator else openloop_binary()
    if binary is None:
        return open_loop_python(host, port, path, rate=rate, seconds=seconds, warm_connections=warm_connections)
    return open_loop_c(binary, host, port, path, rate=rate, seconds=seconds, warm_connections=warm_connections)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(host: str, port: int, path: str, *, connections: int = 50, threads: int = 1,
        seconds: float = 10) -> LoadResult:
    """Closed loop with wrk and the Lua script that gives each request a fresh run id."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(WRK_SCRIPT), f"http://{host}:{port}{path}"]
    with _template_file() as body_template:
        env = {**os.environ, "BENCH_TEMPLATE": body_template, "BENCH_PATH": path}
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=True,
                             timeout=seconds + 60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(data[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout"))
    # wrk counts a non-2xx/3xx answer as a status error; all others are what we asked for (202).
    statuses = Counter({202: data["requests"] - data["errors_status"], "non-2xx": data["errors_status"]})
    return LoadResult(requests=data["requests"], seconds=data["duration_us"] / 1e6, statuses=statuses,
                      errors=errors, generator=f"wrk -t{threads} -c{connections}",
                      p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000)


def closed_loop(host: str, port: int, path: str, *, connections: int = 50, seconds: float = 10) -> LoadResult:
    if have_wrk():
        return wrk(host, port, path, connections=connections, seconds=seconds)
    return closed_loop_python(host, port, path, connections=connections, seconds=seconds)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
