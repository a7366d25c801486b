"""The processes a benchmark starts: Redis, uvicorn apps, the LangSmith stand-in, workers."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tests.support.procs import Proc, RedisServer, free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789"
# The same settings for every app: one process, uvloop, httptools, no access log.
UVICORN_FLAGS = ("--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning")


def uvicorn_app(target: str, redis_url: str, *, name: str, extra_env: dict[str, str] | None = None
                ) -> tuple[Proc, int]:
    port = free_port()
    env = {"REDIS_URL": redis_url, "LSWH_SECRETS": SECRET, **(extra_env or {})}
    proc = Proc([sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
                 *UVICORN_FLAGS], env=env, name=name, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=30)
    return proc, port


def shipped_ingress(redis_url: str, *, name: str, extra_env: dict[str, str] | None = None) -> tuple[Proc, int]:
    """`lswh ingress` exactly as a user starts it: the console script, its own uvicorn settings and
    logging (JSON, one line per delivery, to stderr, which Proc writes to a file as a log
    collector would), no flag of the benchmark's."""
    import shutil

    port = free_port()
    env = {"REDIS_URL": redis_url, "LSWH_SECRETS": SECRET, **(extra_env or {})}
    exe = shutil.which("lswh", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "lswh.cli"]
    proc = Proc([*command, "ingress", "--host", "127.0.0.1", "--port", str(port)], env=env, name=name, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=30)
    return proc, port


def rss_mb(pid: int) -> float:
    """Resident set size from /proc (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def tree_pids(pid: int) -> list[int]:
    """pid and its descendants (RQ's work horse is a fork of the worker)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def redis_server() -> RedisServer:
    return RedisServer()


def machine() -> dict[str, str]:
    import platform

    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal:"))
    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu": model, "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
            "python": platform.python_version(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
