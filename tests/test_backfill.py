"""`lswh backfill`: runs a rule matched whose deliveries never arrived are found through the API and
written through the job path; what was written stays as it is."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from lswh.backfill import BackfillRefused, Tally, check_rule
from tests.support.commands import run_lswh
from tests.support.procs import ROOT, RedisServer
from tests.support.stack import Pipeline, StandIn, delivery, fresh_key, fresh_run
from workers.langsmith.door import RuleInfo


def rule(**fields: Any) -> RuleInfo:
    base: dict[str, Any] = dict(id="r", project_id="p", dataset_id=None, filter=None, trace_filter=None,
                                tree_filter=None, is_enabled=True, sampling_rate=1.0)
    return RuleInfo(**{**base, **fields})


# --- what is refused (pure) -------------------------------------------------------------------


def test_a_sampled_rule_is_refused_with_the_reason_unless_sampling_is_ignored() -> None:
    with pytest.raises(BackfillRefused, match=r"samples 0\.25 .* never chose; pass --ignore-sampling"):
        check_rule(rule(sampling_rate=0.25), "r", ignore_sampling=False)
    check_rule(rule(sampling_rate=0.25), "r", ignore_sampling=True)


def test_a_disabled_or_unknown_rule_is_refused() -> None:
    with pytest.raises(BackfillRefused, match="disabled"):
        check_rule(rule(is_enabled=False), "r", ignore_sampling=True)
    with pytest.raises(BackfillRefused, match="no automation rule"):
        check_rule(None, "r", ignore_sampling=False)


def test_the_tally_names_already_present_runs() -> None:
    tally = Tally(found=3, enqueued=3)
    tally.outcomes.update(written=1, unchanged=2)
    assert tally.settled == 3
    assert tally.line() == ("found 3, enqueued 3, already present 2, written 1, updated 0, skipped 0, failed 0")


# --- against the stand-in, with real workers --------------------------------------------------


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    pipeline = Pipeline(redis_server, standin, db=50, LANGSMITH_API_KEY=fresh_key())
    yield pipeline
    pipeline.stop()


def project_with_runs(standin: StandIn, n: int, **fields: Any) -> tuple[str, list[dict[str, Any]]]:
    """A project of its own with `n` runs named "chat", started a minute ago, inputs and outputs stored."""
    project = str(uuid.uuid4())
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    runs = [fresh_run(session_id=project, start_time=start, name="chat", inputs={"q": f"question {i}"},
                      outputs={"a": f"answer {i}"}, **fields) for i in range(n)]
    standin.add_runs(runs)
    return project, runs


def test_backfill_writes_runs_never_delivered_and_a_second_one_changes_nothing(stack: Pipeline,
                                                                                standin: StandIn) -> None:
    project, (delivered, lost) = project_with_runs(standin, 2)
    other = fresh_run(session_id=project, start_time=lost["start_time"], name="other", inputs={"q": "x"})
    standin.add_runs([other])
    [rule_id] = standin.add_rules([{"project_id": project, "filter": 'eq(name, "chat")'}])
    assert stack.post(delivery([delivered], rule_id=rule_id)).status_code == 202
    stack.wait_examples([delivered["id"]])
    stack.wait_idle()

    first = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h")
    assert first.returncode == 0, first.stderr
    assert "found 2, enqueued 2, already present 1, written 1, updated 0, skipped 0, failed 0" in first.stdout
    examples = stack.standin.examples_by_run([delivered["id"], lost["id"], other["id"]], stack.dataset)
    assert sorted(examples) == sorted([delivered["id"], lost["id"]])  # the filter left `other` out
    assert all(len(found) == 1 for found in examples.values())
    assert examples[lost["id"]][0]["inputs"] == {"q": "question 1"}  # read through the API, while listing

    second = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h")
    assert second.returncode == 0, second.stderr
    assert "found 2, enqueued 2, already present 2, written 0, updated 0, skipped 0, failed 0" in second.stdout
    assert stack.standin.examples_by_run([delivered["id"], lost["id"]], stack.dataset) == examples


RUN_READS = ("POST /api/v2/runs/query", "POST /runs/query", "GET /runs/{run_id}", "GET /api/v2/runs/{run_id}")


def test_backfill_reads_each_run_once_and_the_job_path_takes_it_from_the_listing(stack: Pipeline,
                                                                                  standin: StandIn) -> None:
    """Two listing pages (1,000 + 10 runs, inputs and outputs with them) are all the run reads a
    backfill makes: the synthetic deliveries carry the data and the workers read no run again;
    corrections are still joined from feedback."""
    from workers.langsmith.door import MATCH_PAGE

    project, runs = project_with_runs(standin, MATCH_PAGE + 10)
    corrected = runs[::5]
    standin.add_feedback([{"run_id": r["id"], "key": "correctness", "correction": f"fixed {r['id'][:8]}"}
                          for r in corrected])
    [rule_id] = standin.add_rules([{"project_id": project}])
    before = standin.stats()["requests"]
    result = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h")
    assert result.returncode == 0, result.stderr
    assert f"found {len(runs)}, enqueued {len(runs)}, already present 0, written {len(runs)}" in result.stdout
    after = standin.stats()["requests"]
    reads = {route: after.get(route, 0) - before.get(route, 0) for route in RUN_READS}
    assert reads == {"POST /api/v2/runs/query": 2, "POST /runs/query": 0, "GET /runs/{run_id}": 0,
                     "GET /api/v2/runs/{run_id}": 0}
    examples = standin.examples_by_run([r["id"] for r in runs], stack.dataset)
    fixed = {r["id"] for r in corrected}
    for i, run in enumerate(runs):
        [example] = examples[run["id"]]
        assert example["inputs"] == {"q": f"question {i}"}
        expected = {"output": f"fixed {run['id'][:8]}"} if run["id"] in fixed else {"a": f"answer {i}"}
        assert example["outputs"] == expected


def test_listing_pages_with_data_are_sized_by_bytes() -> None:
    from workers.langsmith.door import DATA_PAGE_BYTES, MATCH_PAGE, next_data_page

    assert next_data_page(100 * 500, 100) == MATCH_PAGE  # small runs: the query's maximum
    assert next_data_page(100 * 256 * 1024, 100) == DATA_PAGE_BYTES // (256 * 1024)
    assert next_data_page(10 * DATA_PAGE_BYTES, 10) == 1  # a run larger than a page's bytes: one at a time
    assert next_data_page(0, 0) == MATCH_PAGE


def test_large_runs_are_listed_in_pages_that_fit_the_byte_bound(stack: Pipeline, standin: StandIn) -> None:
    """300 runs of 200 KB: a first page of 100 (20 MB), then pages of DATA_PAGE_BYTES / 200 KB;
    pages of 1,000 would have read them in 2 requests, 60 MB in the second."""
    from workers.langsmith.door import DATA_PAGE_BYTES, FIRST_DATA_PAGE

    project = str(uuid.uuid4())
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    blob = "z" * (200 * 1024)
    runs = [fresh_run(session_id=project, start_time=start, name="big", inputs={"q": blob, "i": i},
                      outputs={"a": i}) for i in range(300)]
    for first in range(0, len(runs), 50):
        standin.add_runs(runs[first:first + 50])
    [rule_id] = standin.add_rules([{"project_id": project}])
    queries = standin.stats()["requests"].get("POST /api/v2/runs/query", 0)
    result = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h")
    assert result.returncode == 0, result.stderr
    assert "found 300, enqueued 300, already present 0, written 300" in result.stdout
    per_page = DATA_PAGE_BYTES // len(orjson.dumps({"q": blob, "i": 100}))
    expected = 1 + -(-(300 - FIRST_DATA_PAGE) // per_page)
    assert standin.stats()["requests"]["POST /api/v2/runs/query"] - queries == expected
    examples = stack.standin.examples_by_run([r["id"] for r in runs], stack.dataset)
    assert all(examples[r["id"]][0]["inputs"] == {"q": blob, "i": i} for i, r in enumerate(runs))


def test_dry_run_only_counts_following_the_cursor_past_one_page(stack: Pipeline, standin: StandIn) -> None:
    from workers.langsmith.door import MATCH_PAGE

    project, runs = project_with_runs(standin, MATCH_PAGE + 50)
    [rule_id] = standin.add_rules([{"project_id": project}])
    queries = standin.stats()["requests"].get("POST /api/v2/runs/query", 0)
    result = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{MATCH_PAGE + 50} runs match; dry run, nothing enqueued" in result.stdout
    assert standin.stats()["requests"]["POST /api/v2/runs/query"] - queries == 2  # two pages
    assert stack.standin.examples_by_run([r["id"] for r in runs], stack.dataset) == {}


def test_window_outside_the_runs_finds_nothing(stack: Pipeline, standin: StandIn) -> None:
    project, _ = project_with_runs(standin, 1)
    [rule_id] = standin.add_rules([{"project_id": project}])
    result = run_lswh(stack.env, "backfill", "--rule", rule_id, "--from", "2024-01-01T00:00:00Z",
                      "--to", "2024-01-02T00:00:00Z", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "0 runs match" in result.stdout


def test_a_sampled_rule_is_refused_by_the_command(stack: Pipeline, standin: StandIn) -> None:
    project, _ = project_with_runs(standin, 1)
    [rule_id] = standin.add_rules([{"project_id": project, "sampling_rate": 0.5}])
    refused = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h")
    assert refused.returncode == 2
    assert "samples 0.5" in refused.stderr and "--ignore-sampling" in refused.stderr
    allowed = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h", "--dry-run", "--ignore-sampling")
    assert allowed.returncode == 0 and "1 runs match" in allowed.stdout


def test_the_rule_and_its_secret_url_never_reach_the_output(stack: Pipeline, standin: StandIn) -> None:
    project, _ = project_with_runs(standin, 1)
    secret = f"hook-secret-{uuid.uuid4().hex}"
    [rule_id] = standin.add_rules([{"project_id": project, "sampling_rate": 0.5,
                                    "webhooks": [{"url": f"https://hooks.example/webhooks/langsmith?secret={secret}"}]}])
    for args in (["--dry-run", "--ignore-sampling"], []):
        result = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h", *args)
        assert secret not in result.stdout + result.stderr


def test_progress_bar_and_summary_on_a_terminal(stack: Pipeline, standin: StandIn) -> None:
    project, runs = project_with_runs(standin, 3)
    [rule_id] = standin.add_rules([{"project_id": project}])
    primary, secondary = pty.openpty()
    # A terminal has a size (a fresh pty's is 0x0, which tqdm would honour with an empty bar).
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    exe = ROOT / ".venv" / "bin" / "lswh"
    command = [str(exe)] if exe.exists() else ["python", "-m", "lswh.cli"]
    proc = subprocess.Popen([*command, "backfill", "--rule", rule_id, "--since", "1h"],
                            env={**os.environ, **stack.env}, cwd=ROOT,
                            stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    assert proc.wait(timeout=30) == 0, screen.decode(errors="replace")
    text = screen.decode(errors="replace")
    assert "100%|" in text  # tqdm's bar, drawn because stderr is a terminal
    assert "3/3" in text
    assert "found 3, enqueued 3, already present 0, written 3" in text.splitlines()[-1]
    assert stack.standin.examples_by_run([r["id"] for r in runs], stack.dataset).keys() == {r["id"] for r in runs}


def test_off_a_terminal_no_bar_is_drawn(stack: Pipeline, standin: StandIn) -> None:
    project, _ = project_with_runs(standin, 1)
    [rule_id] = standin.add_rules([{"project_id": project}])
    result = run_lswh(stack.env, "backfill", "--rule", rule_id, "--since", "1h")
    assert result.returncode == 0, result.stderr
    assert "%|" not in result.stderr and "written 1" in result.stdout


def test_every_key_backfill_writes_expires(stack: Pipeline) -> None:
    """Runs after the tests above."""
    from tests.support.faults import keys_without_ttl

    assert stack.redis.keys("lswh:rule-runs:*")
    assert keys_without_ttl(stack.redis) == []
