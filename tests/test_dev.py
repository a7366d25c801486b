"""`lswh dev` with nothing set up: real Redis, stand-in, ingress, workers and rq-dashboard, over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lswh.dev import Dev
from tests.support.procs import ROOT, Proc, free_port

FIXTURE = ROOT / "standin" / "lswh_standin" / "fixtures" / "langsmith_docs_payload.json"
FIXTURE_RUN_ID = "6ab80f10-d79c-4fa2-b441-922ed6feb630"
SET_UP_NOTHING = (
    "REDIS_URL",
    "LANGSMITH_API_KEY",
    "LANGSMITH_ENDPOINT",
    "LANGCHAIN_API_KEY",
    "LANGCHAIN_ENDPOINT",
    "LSWH_SECRETS",
    "LSWH_PUBLIC_URL",
    "LSWH_S3_ALLOWED_HOSTS",
    "RQ_DASHBOARD_USERNAME",
    "RQ_DASHBOARD_PASSWORD",
)


@pytest.fixture
def start_dev(monkeypatch, tmp_path):
    for name in SET_UP_NOTHING:
        monkeypatch.delenv(name, raising=False)
    started: list[Proc] = []

    def start(workers: int = 1, env: dict[str, str] | None = None) -> tuple[Proc, dict[str, str]]:
        exe = shutil.which("lswh", path=str(Path(sys.executable).parent))
        args = [exe] if exe else [sys.executable, "-m", "lswh.cli"]
        proc = Proc(
            [
                *args,
                "dev",
                "--workers",
                str(workers),
                "--port",
                str(free_port()),
                "--dashboard-port",
                str(free_port()),
            ],
            env=env,
            name="lswh-dev",
            cwd=tmp_path,
        )
        started.append(proc)
        return proc, printed(proc)

    yield start
    for proc in started:
        proc.stop()


def printed(proc: Proc, timeout: float = 60.0) -> dict[str, str]:
    """The lines `lswh dev` prints once everything answers, by name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = {}
        for line in proc.output().splitlines():
            for name, sep in (
                ("Webhook URL", ": "),
                ("Dashboard", ": "),
                ("LangSmith stand-in", ": "),
                ("REDIS_URL", "="),
            ):
                if line.startswith(name + sep):
                    lines[name] = line.removeprefix(name + sep)
        if "REDIS_URL" in lines:
            return lines
        if not proc.alive():
            pytest.fail(f"lswh dev exited {proc.popen.returncode}:\n{proc.output()}")
        time.sleep(0.1)
    pytest.fail(f"lswh dev printed no URLs within {timeout}s:\n{proc.output()}")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def stop(proc: Proc, sig: int) -> tuple[int, float]:
    """Signal `lswh dev` alone (not its group), as a supervisor or a terminal's kill would."""
    started = time.monotonic()
    os.kill(proc.pid, sig)
    code = proc.popen.wait(10)
    return code, time.monotonic() - started


def examples_of_fixture_run(standin: str) -> list[dict]:
    response = httpx.get(f"{standin}/_admin/examples", params={"dataset": "langsmith-webhook-examples"})
    response.raise_for_status()
    return [e for e in response.json() if e.get("source_run_id") == FIXTURE_RUN_ID]


def test_posting_the_fixture_yields_an_example_in_the_stand_in(start_dev):
    proc, urls = start_dev()
    response = httpx.post(
        urls["Webhook URL"],
        content=FIXTURE.read_bytes(),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 202, response.text

    deadline = time.monotonic() + 30
    while not (found := examples_of_fixture_run(urls["LangSmith stand-in"])):
        assert time.monotonic() < deadline, f"no example after 30s:\n{proc.output()}"
        assert proc.alive(), proc.output()
        time.sleep(0.2)
    assert len(found) == 1


def test_dashboard_answers(start_dev):
    _, urls = start_dev()
    assert httpx.get(urls["Dashboard"]).status_code == 200


def test_the_secret_is_printed_only_in_the_webhook_url_line(start_dev):
    proc, urls = start_dev()
    secret = parse_qs(urlsplit(urls["Webhook URL"]).query)["secret"][0]
    assert httpx.post(urls["Webhook URL"], content=b"[]", timeout=5).status_code == 400  # not an object
    stop(proc, signal.SIGINT)
    assert proc.output().count(secret) == 1


@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_a_signal_to_dev_alone_stops_everything_it_started_and_exits_0(start_dev, sig, workers):
    proc, _ = start_dev(workers=workers)
    started = children(proc.pid)
    assert len(started) == 4 + workers  # redis, stand-in, ingress, dashboard, workers

    code, took = stop(proc, sig)
    assert code == 0, proc.output()
    assert took < 10
    assert [pid for pid in started if Path(f"/proc/{pid}").exists()] == []


def test_a_child_dying_stops_everything_and_exits_1_naming_it(start_dev):
    proc, _ = start_dev()
    started = children(proc.pid)
    ingress = next(pid for pid in started if b"ingress" in Path(f"/proc/{pid}/cmdline").read_bytes())
    os.kill(ingress, signal.SIGKILL)

    assert proc.popen.wait(10) == 1
    assert "ingress exited unexpectedly" in proc.output()
    assert [pid for pid in started if Path(f"/proc/{pid}").exists()] == []


def test_the_webhook_url_is_printed_with_lswh_public_url_as_base(start_dev):
    _, urls = start_dev(env={"LSWH_PUBLIC_URL": "https://example.test/"})
    assert urls["Webhook URL"].startswith("https://example.test/webhooks/langsmith?secret=")


def test_a_configured_secret_is_used_and_a_made_up_one_otherwise(start_dev):
    _, urls = start_dev(env={"LSWH_SECRETS": "first-secret-value,second-secret-value"})
    assert urls["Webhook URL"].endswith("/webhooks/langsmith?secret=first-secret-value")


def ignores(pid: int, sig: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (sig - 1)))


def test_a_child_that_ignores_sigterm_is_killed_within_the_grace_period():
    dev = Dev()
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    child = dev.start("stubborn", [sys.executable, "-c", stubborn], dict(os.environ))
    deadline = time.monotonic() + 10
    while not ignores(child.popen.pid, signal.SIGTERM):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    started = time.monotonic()
    dev.stop()
    assert child.popen.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10


def test_behind_a_proxy_dev_keeps_its_local_services_off_it() -> None:
    from lswh.dev import _local_bypasses_proxy

    env = {"HTTPS_PROXY": "http://proxy.corp.example:3128", "NO_PROXY": ".corp.example"}
    _local_bypasses_proxy(env)
    assert env["NO_PROXY"].split(",") == [".corp.example", "127.0.0.1", "localhost"]
    assert env["no_proxy"] == env["NO_PROXY"]
    untouched = {"PATH": "/bin"}
    _local_bypasses_proxy(untouched)
    assert untouched == {"PATH": "/bin"}
