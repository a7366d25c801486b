"""The whole stack under `docker compose`, on a real Docker engine, as a user runs it.

A copy of this checkout (tracked and new files, as a fresh clone would have them plus the
change under test) is built with the shipped Dockerfile and brought up with the shipped
docker-compose.yml and a `.env` made from `.env.example`; a LangSmith stand-in joins through
tests/compose/standin.yml. Public registries are unreachable here, so the images the compose
file names are replaced by images built from Debian packages under local tags
(tests/compose/bases.sh, cached between runs) and passed through the image variables
(PYTHON_IMAGE, REDIS_IMAGE, PROMETHEUS_IMAGE, NGINX_IMAGE): the official names are never
written. Everything runs under the test's own compose project name, image tags and host ports,
and `down -v` removes all of it at the end, the cached bases excepted.

Needs a Docker engine (root: debootstrap builds the bases). `.ci/run` starts one and sets
LSWH_COMPOSE_TEST=require, so a missing engine fails there; elsewhere the test is skipped
without an engine, and always with LSWH_COMPOSE_TEST=skip.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.procs import ROOT, free_port
from tests.support.stack import FIXTURE, delivery, fresh_run

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]

MODE = os.environ.get("LSWH_COMPOSE_TEST", "").strip().lower()
BASE_PREFIX = os.environ.get("LSWH_CI_BASE_PREFIX", "lswh-ci-base")
BASES = {name: f"{BASE_PREFIX}/{name}:bookworm" for name in ("python", "redis", "prometheus", "nginx")}
SECRET = "compose-test-secret-" + uuid.uuid4().hex[:8]
DASHBOARD_PASSWORD = "compose-test-" + uuid.uuid4().hex[:8]
DATASET = "compose-ci"
# The stand-in takes any key (tests/support/stack.py); the workers check it at start.
API_KEY = "lsv2-standin-compose"
UNREADABLE_REASON = "no inline value, no usable presigned URL, and the API did not return the run"


def engine_problem() -> str | None:
    if not shutil.which("docker"):
        return "no `docker` client on PATH"
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 20 s"
    if done.returncode != 0:
        return f"no Docker engine answers: {done.stderr.strip()[:300]}"
    return None


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


class Stack:
    """One compose project in a copy of the checkout, driven by `docker-compose` commands."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.project = f"lswhci{os.getpid()}{uuid.uuid4().hex[:4]}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.project}-", dir="/var/tmp"))
        self.app_image = f"lswh-ci/{self.project}:app"
        self.standin_image = f"lswh-ci/{self.project}:standin"
        self.port, self.dashboard_port, self.prometheus_port = free_port(), free_port(), free_port()
        self.tls_port, self.standin_port = free_port(), free_port()
        self.compose = [*compose_command(), "-p", self.project, "-f", "docker-compose.yml",
                        "-f", "tests/compose/standin.yml"]
        self.times: list[tuple[str, float]] = []
        # Variables the compose files read must come from .env alone, never from this process.
        used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()
                              + (ROOT / "tests/compose/standin.yml").read_text()))
        self.env = {k: v for k, v in os.environ.items() if k not in used and not k.startswith("COMPOSE_")}
        self.http = httpx.Client(timeout=15)
        self.standin = httpx.Client(base_url=f"http://127.0.0.1:{self.standin_port}", timeout=60)

    # --- plumbing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        self.report(f"compose test: {name} ...")
        yield
        took = time.monotonic() - started
        self.times.append((name, took))
        self.report(f"compose test: {name}: {took:.1f} s")

    def run(self, *argv: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, cwd=self.dir, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                                 f"{done.stderr[-3000:]}")
        return done

    def dc(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(*self.compose, *args, timeout=timeout, check=check)

    def set_env(self, **values: str) -> None:
        """Set variables in .env as a user edits it: the line of .env.example, else a new one."""
        path = self.dir / ".env"
        lines = path.read_text().splitlines()
        for name, value in values.items():
            pattern = re.compile(rf"#?\s*{name}=.*")
            hits = [i for i, line in enumerate(lines) if pattern.fullmatch(line.strip())]
            assert len(hits) <= 1, f".env.example names {name} {len(hits)} times"
            if hits:
                lines[hits[0]] = f"{name}={value}"
            else:
                lines.append(f"{name}={value}")
        path.write_text("\n".join(lines) + "\n")

    def containers(self, service: str) -> list[str]:
        return sorted(self.dc("ps", "-q", service).stdout.split())

    def inspect(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        return json.loads(self.run("docker", "inspect", *ids).stdout)  # type: ignore[no-any-return]

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, AssertionError, json.JSONDecodeError):
                last = predicate()
                if last:
                    return last
            time.sleep(interval)
        state = self.dc("ps", check=False).stdout + self.dc("logs", "--tail", "40", check=False).stdout[-6000:]
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{state}")

    def all_healthy(self) -> bool:
        states = []
        for c in self.inspect(self.dc("ps", "-q").stdout.split()):
            health = c["State"].get("Health")
            states.append(c["State"]["Running"] and (health is None or health["Status"] == "healthy"))
        return bool(states) and all(states)

    def py(self, code: str) -> Any:
        """Run Python in the ingress container (REDIS_URL of the stack) and parse its JSON output."""
        done = self.dc("exec", "-T", "ingress", "python", "-c", code, timeout=60)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def workers(self) -> list[dict[str, Any]]:
        """Registered RQ workers with a heartbeat younger than 30 s: name and hostname."""
        return self.py(
            "import datetime as dt, json, os, redis\n"
            "from rq import Worker\n"
            "c = redis.Redis.from_url(os.environ['REDIS_URL'])\n"
            "now = dt.datetime.now(dt.UTC)\n"
            "aware = lambda b: b if b.tzinfo else b.replace(tzinfo=dt.UTC)\n"
            "fresh = lambda b: b is not None and (now - aware(b)).total_seconds() < 30\n"
            "print(json.dumps([{'name': w.name, 'hostname': w.hostname} for w in Worker.all(connection=c)"
            " if fresh(w.last_heartbeat)]))"
        )  # type: ignore[no-any-return]

    def idle(self) -> bool:
        return self.py(  # type: ignore[no-any-return]
            "import json, os, redis\n"
            "from rq import Queue\n"
            "from rq.registry import ScheduledJobRegistry, StartedJobRegistry\n"
            "q = Queue('lswh', connection=redis.Redis.from_url(os.environ['REDIS_URL']))\n"
            "print(json.dumps(q.count == 0 and StartedJobRegistry(queue=q).count == 0"
            " and ScheduledJobRegistry(queue=q).count == 0))"
        )

    def post(self, body: Any, client: httpx.Client | None = None) -> int:
        response = (client or self.http).post(f"http://127.0.0.1:{self.port}/webhooks/langsmith",
                                              params={"secret": SECRET}, json=body)
        return response.status_code

    def examples_per_run(self) -> dict[str, int]:
        response = self.standin.get("/_admin/examples", params={"dataset": DATASET})
        response.raise_for_status()
        counts: dict[str, int] = {}
        for example in response.json():
            run_id = str(example.get("source_run_id"))
            counts[run_id] = counts.get(run_id, 0) + 1
        return counts

    def wait_landed(self, run_ids: list[str], timeout: float, what: str) -> dict[str, int]:
        wanted = set(run_ids)

        def landed() -> dict[str, int] | None:
            counts = self.examples_per_run()
            return counts if wanted <= set(counts) else None

        try:
            self.wait(landed, timeout, what, interval=2)
        except AssertionError as exc:  # say which runs are missing, and what Redis said meanwhile
            counts = self.examples_per_run()
            missing = sorted(wanted - set(counts))
            redis_log = self.dc("logs", "--tail", "40", "redis", check=False).stdout[-4000:]
            raise AssertionError(f"{len(missing)} of {len(wanted)} runs never landed (e.g. {missing[:3]}); "
                                 f"{len(counts)} runs landed in all\nredis:\n{redis_log}\n{exc}") from None
        self.wait(self.idle, 240, "the queue and its registries to empty", interval=2)
        return {rid: n for rid, n in self.examples_per_run().items() if rid in wanted}


class Load:
    """Deliveries of `runs` inline runs posted back to back from `threads` threads, each answer
    recorded with the time it arrived, until stopped."""

    def __init__(self, stack: Stack, runs: int = 5, threads: int = 2, pause: float = 0.05) -> None:
        self.stack, self.runs, self.pause = stack, runs, pause
        self.records: list[tuple[float, int | str, list[str]]] = []
        self.delivery_ids: dict[str, str] = {}  # first run id -> delivery id, of every 202
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._post, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _post(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                runs = [fresh_run(inputs={"q": i}, outputs={"a": i}) for i in range(self.runs)]
                try:
                    response = client.post(f"http://127.0.0.1:{self.stack.port}/webhooks/langsmith",
                                           params={"secret": SECRET}, json=delivery(runs))
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.records.append((time.monotonic(), status, [r["id"] for r in runs]))
                    if status == 202:
                        self.delivery_ids[runs[0]["id"]] = response.json()["delivery_id"]
                time.sleep(self.pause)

    def accepted(self) -> list[str]:
        return [rid for _, status, ids in self.records if status == 202 for rid in ids]

    def statuses(self) -> dict[int | str, int]:
        counts: dict[int | str, int] = {}
        for _, status, _ in self.records:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def run_until(self, seconds: float) -> None:
        time.sleep(seconds)


def assert_exactly_once(counts: dict[str, int], run_ids: list[str]) -> None:
    missing = [rid for rid in run_ids if rid not in counts]
    twice = {rid: n for rid, n in counts.items() if n != 1}
    assert not missing and not twice, f"{len(missing)} lost (e.g. {missing[:3]}), duplicated: {list(twice.items())[:3]}"


@pytest.fixture(scope="module")
def report(pytestconfig: pytest.Config) -> Callable[[str], None]:
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")

    def write(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    return write


def copy_checkout(into: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)


def image_bytes(*tags: str) -> dict[str, int]:
    sizes = {}
    for tag in tags:
        done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True,
                              text=True, check=False)
        if done.returncode == 0:
            sizes[tag] = int(done.stdout.strip())
    return sizes


def test_compose_stack_as_a_user_runs_it(report: Callable[[str], None]) -> None:
    if MODE == "skip":
        pytest.skip("LSWH_COMPOSE_TEST=skip")
    problem = engine_problem()
    if problem:
        if MODE == "require":
            pytest.fail(f"LSWH_COMPOSE_TEST=require but {problem}")
        pytest.skip(f"{problem} (.ci/run starts one; LSWH_COMPOSE_TEST=require makes this a failure)")
    stack = Stack(report)
    version = stack.run(*compose_command(), "version", check=False, timeout=60).stdout.splitlines()[:1]
    report(f"compose test: {' '.join(compose_command())} ({' '.join(version)}), project {stack.project}")
    if compose_command() == ["docker-compose"]:
        report("compose test: only compose v1 runs here; for v2 users nothing of this run is verified "
               "beyond the compose-spec schema (tests/test_deploy.py): `scale` and `mem_limit` are spec keys v2 reads")
    try:
        run_stack(stack)
    finally:
        leftovers = teardown(stack)
        total = sum(t for _, t in stack.times)
        report("compose test: phases " + ", ".join(f"{n} {t:.0f}s" for n, t in stack.times) + f"; total {total:.0f} s")
    assert not any(leftovers.values()), leftovers


def run_stack(stack: Stack) -> None:
    with stack.phase("base images (built only when missing)"):
        stack.run(str(ROOT / "tests/compose/bases.sh"), timeout=1800)
    with stack.phase("copy of the checkout"):
        copy_checkout(stack.dir)
    with stack.phase("project image (shipped Dockerfile) and stand-in image"):
        # Host network: this engine runs without a default bridge. The CA bundle pip needs comes
        # with the local python base (its /etc/pip.conf), not through the Dockerfile.
        stack.run("docker", "build", "-q", "--network", "host", "--build-arg", f"PYTHON_IMAGE={BASES['python']}",
                  "-t", stack.app_image, ".", timeout=1800)
        # The stand-in's own image: its distribution (standin/) alone, on the same python base.
        stack.run("docker", "build", "-q", "--network", "host", "--build-arg", f"PYTHON_IMAGE={BASES['python']}",
                  "-t", stack.standin_image, "-f", "tests/compose/standin.Dockerfile", "standin", timeout=1800)
        sizes = image_bytes(*BASES.values(), f"{BASE_PREFIX}/debian:bookworm", stack.app_image, stack.standin_image)
        stack.report("compose test: image sizes " + ", ".join(f"{t} {s / 2**20:.0f} MiB" for t, s in sizes.items()))

    shutil.copy(stack.dir / ".env.example", stack.dir / ".env")
    stack.set_env(
        LSWH_SECRETS=SECRET, LANGSMITH_API_KEY=API_KEY, RQ_DASHBOARD_PASSWORD=DASHBOARD_PASSWORD,
        LANGSMITH_ENDPOINT="http://langsmith:1984", LSWH_DATASET=DATASET, LSWH_RETRY_BASE_SECONDS="1",
        LSWH_IMAGE=stack.app_image, LSWH_STANDIN_IMAGE=stack.standin_image, PYTHON_IMAGE=BASES["python"],
        REDIS_IMAGE=BASES["redis"], PROMETHEUS_IMAGE=BASES["prometheus"], NGINX_IMAGE=BASES["nginx"],
        LSWH_PORT=f"127.0.0.1:{stack.port}", RQ_DASHBOARD_PORT=str(stack.dashboard_port),
        PROMETHEUS_PORT=str(stack.prometheus_port), LSWH_TLS_PORT=f"127.0.0.1:{stack.tls_port}",
        LSWH_STANDIN_PORT=str(stack.standin_port),
    )

    with stack.phase("up -d: every service healthy, the docs fixture lands"):
        stack.dc("up", "-d", "--no-build")
        stack.wait(stack.all_healthy, 240, "every service to be healthy")
        assert len(stack.containers("worker")) == 2  # LSWH_WORKERS' default
        fixture = json.loads(FIXTURE.read_text())
        assert stack.post(fixture) == 202
        stack.wait_landed([fixture["runs"][0]["id"]], 120, "the docs fixture's example")

    scale_and_survive(stack)
    kill_redis(stack)
    later_phases(stack)


def scale_and_survive(stack: Stack) -> None:
    with stack.phase("LSWH_WORKERS=3 and a plain up -d: 3 registered workers"):
        stack.set_env(LSWH_WORKERS="3")
        stack.dc("up", "-d", "--no-build")
        assert len(stack.containers("worker")) == 3
        stack.wait(lambda: len(stack.workers()) == 3, 120, "3 registered workers")
        hostnames = {w["hostname"] for w in stack.workers()}
        assert hostnames == {c[:12] for c in stack.containers("worker")}

    with stack.phase("2,000 runs in 200 deliveries, one worker SIGKILLed mid-load: each lands once"):
        bodies = [delivery([fresh_run(inputs={"q": i}, outputs={"a": i}) for i in range(10)]) for _ in range(200)]
        statuses = []
        victim = stack.containers("worker")[0]
        with httpx.Client(timeout=30) as client:
            for i, body in enumerate(bodies):
                statuses.append(stack.post(body, client))
                if i == 50:
                    stack.run("docker", "kill", "-s", "KILL", victim)
        assert statuses == [202] * 200
        run_ids = [r["id"] for body in bodies for r in body["runs"]]
        assert_exactly_once(stack.wait_landed(run_ids, 400, "2,000 examples"), run_ids)
        usage = stack.run("docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}",
                          *stack.dc("ps", "-q").stdout.split()).stdout
        stack.report("compose test: memory after the load (docs/production.md sizes mem_limit):\n" + usage.strip())
        stack.dc("up", "-d", "--no-build")  # the killed container back, if its restart policy has not
        stack.wait(lambda: len(stack.workers()) == 3, 120, "3 registered workers again")

    with stack.phase("rolling restart of the workers under load: 0 lost, 0 duplicated"), Load(stack) as load:
        load.run_until(3)
        for container in stack.containers("worker"):
            before = {w["name"] for w in stack.workers() if w["hostname"] == container[:12]}
            stack.run("docker", "restart", "-t", "60", container)
            stack.wait(lambda c=container, b=before: any(w["hostname"] == c[:12] and w["name"] not in b
                                                         for w in stack.workers()),
                       120, f"worker {container[:12]} back and registered")
        load.run_until(3)
    assert set(load.statuses()) == {202}, load.statuses()
    assert_exactly_once(stack.wait_landed(load.accepted(), 300, "the rolling restart's runs"), load.accepted())
    stack.report(f"compose test: rolling restart: {len(load.accepted())} runs accepted and landed once")

    with stack.phase("all workers recreated at once under load: 0 lost, 0 duplicated"), Load(stack) as load:
        load.run_until(3)
        old = set(stack.containers("worker"))
        stack.dc("up", "-d", "--no-build", "--no-deps", "--force-recreate", "worker")
        new = set(stack.containers("worker"))
        assert len(new) == 3 and not old & new
        stack.wait(lambda: {w["hostname"] for w in stack.workers()} == {c[:12] for c in new}, 180,
                   "the 3 new workers registered")
        load.run_until(3)
    assert set(load.statuses()) == {202}, load.statuses()
    assert_exactly_once(stack.wait_landed(load.accepted(), 300, "the recreation's runs"), load.accepted())
    stack.report(f"compose test: recreate: {len(load.accepted())} runs accepted and landed once")

    with stack.phase("restart redis under load: every 202 lands, 503 never 4xx"), Load(stack) as load:
        load.run_until(3)
        stack.dc("restart", "redis")
        stack.wait(stack.all_healthy, 120, "redis healthy again")
        load.run_until(3)
    statuses = load.statuses()
    assert set(statuses) <= {202, 503}, statuses
    assert_exactly_once(stack.wait_landed(load.accepted(), 300, "the Redis restart's runs"), load.accepted())
    stack.report(f"compose test: restart redis: answers {statuses}, {len(load.accepted())} runs landed once")



def kill_redis(stack: Stack) -> None:
    with stack.phase("kill -s KILL redis under load: only the last seconds' acknowledgements may be lost"):
        with Load(stack) as load:
            load.run_until(3)
            (redis_container,) = stack.containers("redis")
            # The engine's own CLI, not compose's (a second of Python start-up): the kill lands
            # between these two instants.
            kill_sent = time.monotonic()
            stack.run("docker", "kill", "-s", "KILL", redis_container)
            kill_done = time.monotonic()
            load.run_until(3)
            away_until = time.monotonic()
            stack.dc("up", "-d", "--no-build", "redis")
            stack.wait(stack.all_healthy, 120, "redis healthy again")
            load.run_until(3)
        statuses = load.statuses()
        assert set(statuses) <= {202, 503}, statuses
        during = {s for t, s, _ in load.records if kill_done < t < away_until}
        assert 503 in during, f"answers while Redis was away: {during}"
        accepted = load.accepted()
        stack.wait(stack.idle, 300, "the queue to drain", interval=2)
        time.sleep(5)
        counts = {rid: n for rid, n in stack.examples_per_run().items() if rid in set(accepted)}
        assert all(n == 1 for n in counts.values()), "a run landed twice"
        missing = {rid for rid in accepted if rid not in counts}

        def acknowledged_within(seconds: float) -> set[str]:
            return {rid for t, s, ids in load.records if s == 202 and kill_sent - seconds <= t <= kill_done
                    for rid in ids}

        # AOF `everysec` (docs/production.md, "Redis: persistence"): Redis writes each command to
        # the file before it answers, and
        # fsyncs once a second, so killing the process alone loses nothing it wrote. But while a
        # background fsync is still running (a busy disk) Redis postpones that write for up to
        # 2 s, whole seconds of its clock, answering meanwhile (aof.c, flushAppendOnlyFile; its
        # log says "Asynchronous AOF fsync is taking too long"): up to 3 s of acknowledgements.
        last_second, in_window = acknowledged_within(1.0), acknowledged_within(3.0)
        postponed = stack.dc("logs", "--no-color", "redis").stdout.count("fsync is taking too long")
        stack.report(f"compose test: kill redis: answers {statuses}; {len(missing)} of {len(accepted)} accepted runs "
                     f"missing: {len(missing & last_second)} acknowledged in the last second before the kill "
                     f"(of {len(last_second)}), {len(missing - last_second)} 1-3 s before it; Redis logged "
                     f"{postponed} postponed AOF writes")
        if not missing <= in_window:
            lost = [(round(t - kill_sent, 2), load.delivery_ids.get(ids[0]), len(set(ids) & missing))
                    for t, s, ids in load.records if s == 202 and set(ids) & missing]
            states = stack.py(
                "import json, os, redis\n"
                "from rq.job import Job\n"
                "c = redis.Redis.from_url(os.environ['REDIS_URL'])\n"
                "out = {}\n"
                f"for d in {json.dumps([d for _, d, _ in lost if d])}:\n"
                "    i = 'delivery-' + d\n"
                "    j = Job.fetch(i, connection=c) if Job.exists(i, connection=c) else None\n"
                "    r = j.latest_result() if j else None\n"
                "    out[d] = [j.get_status() if j else 'no job', (r.exc_string or '')[-200:] if r else None]\n"
                "print(json.dumps(out))"
            )
            raise AssertionError(f"{len(missing - in_window)} runs acknowledged over 3 s before the kill are lost: "
                                 f"(seconds after the kill was sent, delivery, runs missing): {lost}; jobs: {states}")


def later_phases(stack: Stack) -> None:
    with stack.phase("--profile monitoring: targets, alert rules, Grafana queries"):
        stack.dc("--profile", "monitoring", "up", "-d", "--no-build")
        assert len(stack.containers("worker")) == 3  # a plain up keeps LSWH_WORKERS
        prometheus = f"http://127.0.0.1:{stack.prometheus_port}"

        def targets_up() -> bool:
            active = stack.http.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
            up = [(t["labels"]["job"], t["health"]) for t in active]
            return (up.count(("lswh-ingress", "up")) == 1 and up.count(("lswh-worker", "up")) == 3
                    and len(up) == 4)

        stack.wait(targets_up, 180, "Prometheus to scrape the ingress and 3 workers", interval=3)
        expected_rules = sum(1 for group in yaml.safe_load((ROOT / "deploy/alerts.yml").read_text())["groups"]
                             for rule in group["rules"] if "alert" in rule)

        def rules_ok() -> bool:
            groups = stack.http.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
            return len(rules) == expected_rules and all(r["health"] == "ok" for r in rules)

        stack.wait(rules_ok, 120, f"{expected_rules} alert rules evaluated healthy", interval=3)
        dashboard = json.loads((ROOT / "deploy/grafana/lswh.json").read_text())
        queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]
        assert queries
        for query in queries:
            answer = stack.http.get(f"{prometheus}/api/v1/query", params={"query": query}).json()
            assert answer["status"] == "success", (query, answer)
        stack.report(f"compose test: monitoring: 4 targets up, {expected_rules} rules ok, "
                     f"{len(queries)} panel queries accepted")

    with stack.phase("--profile tls: HTTPS with a self-signed certificate, no /metrics"):
        certs = stack.dir / "deploy" / "certs"
        certs.mkdir(exist_ok=True)
        stack.run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lswh-ci",
                  "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                  "-keyout", str(certs / "privkey.pem"), "-out", str(certs / "fullchain.pem"))
        stack.dc("--profile", "tls", "up", "-d", "--no-build")
        https = f"https://127.0.0.1:{stack.tls_port}"
        context = ssl.create_default_context(cafile=str(certs / "fullchain.pem"))
        with httpx.Client(verify=context, timeout=15) as tls:
            stack.wait(lambda: tls.get(f"{https}/readyz").status_code == 200, 120, "HTTPS /readyz")
            fixture = json.loads(FIXTURE.read_text())
            response = tls.post(f"{https}/webhooks/langsmith", params={"secret": SECRET}, json=fixture)
            assert response.status_code == 202, response.text
            assert tls.get(f"{https}/metrics").status_code == 404
        with pytest.raises(httpx.ConnectError):  # the certificate is trusted only when given
            httpx.get(f"{https}/readyz", timeout=10)
        # The same check a user runs (docs/production.md, "Compose, as the test runs it"):
        stack.run("curl", "-fsS", "--cacert", str(certs / "fullchain.pem"), f"{https}/readyz")

    with stack.phase("rq-dashboard: 401 without credentials, the unreadable run's reason with them"):
        orphan = fresh_run()  # no inline value, no presigned URL, unknown to the API: fails at once
        assert stack.post(delivery([orphan])) == 202
        dashboard_url = f"http://127.0.0.1:{stack.dashboard_port}"
        assert stack.http.get(f"{dashboard_url}/").status_code == 401
        assert stack.http.get(f"{dashboard_url}/0/data/jobs/lswh/failed/100/asc/1.json").status_code == 401
        auth = ("admin", DASHBOARD_PASSWORD)

        def failed_reason() -> str | None:
            listing = stack.http.get(f"{dashboard_url}/0/data/jobs/lswh/failed/100/asc/1.json", auth=auth)
            listing.raise_for_status()
            for job in listing.json()["jobs"]:
                info = stack.http.get(f"{dashboard_url}/0/data/job/{job['id']}.json", auth=auth).json()
                if orphan["id"] in (info.get("exc_info") or ""):
                    return str(info["exc_info"])
            return None

        reason = stack.wait(failed_reason, 120, "the failed job in rq-dashboard", interval=2)
        assert UNREADABLE_REASON in reason, reason


def teardown(stack: Stack) -> dict[str, list[str]]:
    with stack.phase("down -v: nothing of the project left"):
        stack.dc("--profile", "monitoring", "--profile", "tls", "down", "-v", "--remove-orphans", "--timeout", "30",
                 check=False)
        stack.run("docker", "rmi", "-f", stack.standin_image, stack.app_image, check=False)
        label = f"label=com.docker.compose.project={stack.project}"
        leftovers = {
            "containers": stack.run("docker", "ps", "-aq", "--filter", label).stdout.split(),
            "networks": stack.run("docker", "network", "ls", "-q", "--filter", label).stdout.split(),
            "volumes": stack.run("docker", "volume", "ls", "-q", "--filter", label).stdout.split(),
            "images": stack.run("docker", "images", "-q", f"lswh-ci/{stack.project}").stdout.split(),
        }
        df = stack.run("docker", "system", "df", check=False).stdout
        stack.report("compose test: docker system df after down:\n" + df)
        stack.http.close()
        stack.standin.close()
        shutil.rmtree(stack.dir, ignore_errors=True)
    stack.report(f"compose test: done at {dt.datetime.now(dt.UTC):%H:%M:%S} UTC")
    return leftovers
