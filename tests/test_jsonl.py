"""The jsonl action: several writer processes on one directory, read back complete."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.support.procs import ROOT, wait_until
from workers.actions.jsonl import JsonlExample, append_examples, dataset_dir, read_jsonl


def example(n: int, answer: str = "a", run_prefix: str = "run") -> JsonlExample:
    return JsonlExample(id=f"ex-{run_prefix}-{n}", run_id=f"{run_prefix}-{n}", split="train",
                        inputs={"q": f"question {n}"}, outputs={"answer": answer}, metadata={"rule_id": "r"})


def test_appended_examples_read_back_by_id(tmp_path):
    append_examples(tmp_path, "ds", [example(1), example(2)])
    assert {k: v["inputs"] for k, v in read_jsonl(tmp_path, "ds").items()} == {
        "ex-run-1": {"q": "question 1"}, "ex-run-2": {"q": "question 2"}}


def test_a_retried_append_is_harmless_and_the_last_line_per_id_wins(tmp_path):
    append_examples(tmp_path, "ds", [example(1, "first")])
    append_examples(tmp_path, "ds", [example(1, "first")])  # the retry of a batch that had been written
    append_examples(tmp_path, "ds", [example(1, "corrected")], writer="other-host-7")
    found = read_jsonl(tmp_path, "ds")
    assert list(found) == ["ex-run-1"] and found["ex-run-1"]["outputs"] == {"answer": "corrected"}


def test_each_writer_has_its_own_file_per_day_under_the_dataset(tmp_path):
    day = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    path = append_examples(tmp_path, "my/../data set", [example(1)], writer="host-a-12", now=day)
    assert path == dataset_dir(tmp_path, "my/../data set") / "2026-12-01" / "host-a-12.jsonl"
    assert path is not None and path.is_relative_to(tmp_path) and path.parent.parent.parent == tmp_path
    assert dataset_dir(tmp_path, "..").parent == tmp_path and dataset_dir(tmp_path, "..").name != ".."


def test_a_torn_last_line_from_a_crash_is_skipped_and_its_retry_counts(tmp_path):
    path = append_examples(tmp_path, "ds", [example(1)], writer="w")
    assert path is not None
    with path.open("ab") as handle:
        handle.write(b'{"id": "ex-run-2", "inputs": {"q": "que')  # killed mid-write
    assert list(read_jsonl(tmp_path, "ds")) == ["ex-run-1"]
    append_examples(tmp_path, "ds", [example(2)], writer="w")
    assert sorted(read_jsonl(tmp_path, "ds")) == ["ex-run-1", "ex-run-2"]


def test_nothing_to_append_creates_no_file(tmp_path):
    assert append_examples(tmp_path, "ds", []) is None
    assert not any(tmp_path.iterdir())


WRITER = """
import sys, pathlib
from workers.actions.jsonl import append_examples
directory, name, go = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
while not go.exists():
    pass
for batch in range(100):
    examples = [{"id": f"ex-{name}-{batch}-{i}", "run_id": f"{name}-{batch}-{i}", "split": None,
                 "inputs": {"text": "x" * 3000, "n": i}, "outputs": None, "metadata": {}} for i in range(5)]
    append_examples(directory, "shared", examples)
    if batch % 10 == 0:
        append_examples(directory, "shared", examples[:1])  # a retried append
print("done")
"""


def test_two_worker_processes_appending_at_once_are_read_back_complete(tmp_path):
    go = tmp_path / "go"
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), name, str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
    go.touch()  # both start appending together
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outputs == ["done\n", "done\n"]
    found = read_jsonl(out, "shared")
    expected = {f"ex-{name}-{batch}-{i}" for name in ("a", "b") for batch in range(100) for i in range(5)}
    assert set(found) == expected
    assert all(record["inputs"] == {"text": "x" * 3000, "n": int(k.rsplit("-", 1)[1])} for k, record in found.items())
    files = list(dataset_dir(out, "shared").glob("*/*.jsonl"))
    assert len(files) == 2  # one per writer process
    lines = [json.loads(line) for f in files for line in Path(f).read_text().splitlines()]
    assert len(lines) == 2 * (100 * 5 + 10)  # every line whole; retries only added lines
    wait_until(lambda: all(p.poll() is not None for p in procs), what="writers exit")
