"""The `jsonl` action: examples appended to JSON Lines files, one folder per dataset.

Several workers on several hosts may share the directory (a volume, NFS): appends from different
hosts to one file are not atomic there, so no two processes ever write the same file. Each writes
its own, append-only, no locks:

    <directory>/<dataset>/<YYYY-MM-DD>/<hostname>-<pid>.jsonl

One line per example: {"id", "run_id", "split", "inputs", "outputs", "metadata", "written_ns"}.
A batch is one write() then fsync, so the action is done only once it is on disk. A retried or
repeated append only adds lines: `read_jsonl` keeps the last line written per example id (by
`written_ns`, then file and line), and skips a torn line left by a crash mid-write (the retry
wrote it again; the next append first ends the torn line). A thread's line (`write_threads`) is
not appended for a read with fewer turns than the last line written for it: the longest read of
each thread is remembered per action in Redis (LSWH_KEEP_DAYS), as files cannot be read back cheaply.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

from lswh_core import contract
from lswh_core.actions import JsonlKind
from lswh_core.rules import Action
from workers.actions.base import Destination, register
from workers.actions.dataset_writer import UNCHANGED, WRITTEN, Outcomes
from workers.build.examples import EXAMPLE_NAMESPACE
from workers.errors import RunError
from workers.runtime import Runtime
from workers.transforms import ExampleDraft

_lock = threading.Lock()  # threads of one process share its file


class JsonlExample(TypedDict):
    id: str  # the example id (deterministic from dataset and run id, as in LangSmith)
    run_id: str
    split: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    metadata: dict[str, Any]


def writer_name() -> str:
    """This process's file name: unique across hosts (hostname) and processes (pid)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def dataset_dir(directory: str | Path, dataset: str) -> Path:
    """The dataset's folder; the name is percent-encoded so any dataset name is one safe path part."""
    name = quote(dataset, safe=" _-")
    if name.startswith("."):
        name = "%2E" + name[1:]  # never "." or "..", never hidden
    return Path(directory) / name


def append_examples(directory: str | Path, dataset: str, examples: Iterable[JsonlExample], *,
                    writer: str | None = None, now: datetime | None = None) -> Path | None:
    """Append `examples` to this writer's file of the day; returns the file (None if no examples)."""
    stamp = time.time_ns()
    lines = [json.dumps({**example, "written_ns": stamp + i}, ensure_ascii=False, allow_nan=False,
                        separators=(",", ":")) + "\n" for i, example in enumerate(examples)]
    if not lines:
        return None
    day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    folder = dataset_dir(directory, dataset) / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{writer or writer_name()}.jsonl"
    data = "".join(lines).encode("utf-8")
    with _lock:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A crash mid-write left a torn line: end it, or our first line would be glued to it.
            # Race-free: this process is the file's only writer.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def read_jsonl(directory: str | Path, dataset: str) -> dict[str, dict[str, Any]]:
    """Every example of `dataset` written under `directory`, by example id, the last line written
    for each id winning (a retried append is harmless; a newer correction replaces the older)."""
    latest: dict[str, tuple[tuple[int, str, int], dict[str, Any]]] = {}
    for path in sorted(dataset_dir(directory, dataset).glob("*/*.jsonl")):
        with path.open("rb") as handle:
            for number, raw in enumerate(handle):
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # a torn line from a crash mid-write: its retry wrote it again
                if not isinstance(record, Mapping) or not isinstance(record.get("id"), str):
                    continue
                order = (int(record.get("written_ns") or 0), str(path), number)
                if record["id"] not in latest or order > latest[record["id"]][0]:
                    latest[record["id"]] = (order, dict(record))
    return {example_id: record for example_id, (_, record) in latest.items()}


# --- the action --------------------------------------------------------------------------------


def jsonl_examples(dataset: str, run_id: str, drafts: Sequence[Mapping[str, Any]], split: str | None
                   ) -> list[JsonlExample]:
    """A run's drafts as lines. Ids as a dataset action's would be, from the dataset's name (no
    LangSmith dataset is involved), index 0 being the run's one example."""
    return [JsonlExample(id=str(uuid.uuid5(EXAMPLE_NAMESPACE, f"{dataset}:{run_id}" + (f":{i}" if i else ""))),
                         run_id=run_id, split=split, inputs=dict(draft["inputs"]),
                         outputs=draft.get("outputs"), metadata=dict(draft.get("metadata") or {}))
            for i, draft in enumerate(drafts)]


async def write(directory: str, dataset: str, examples: Sequence[JsonlExample]) -> str | RunError:
    """Append off the event loop; a failed write (disk full, volume gone) is retried later."""
    try:
        await asyncio.to_thread(append_examples, directory, dataset, examples)
    except OSError as exc:
        return RunError(f"appending to the jsonl files: {type(exc).__name__}: {exc.strerror or exc}", transient=True)
    return WRITTEN


class Jsonl(JsonlKind, Destination):
    """The target is the dataset's name: no LangSmith dataset is involved."""
    threads = True

    def rows(self, target: Any, run_id: str, drafts: Sequence[ExampleDraft], split: str | None
             ) -> list[dict[str, Any]]:
        return [{**line, "source_run_id": run_id} for line in jsonl_examples(str(target), run_id, drafts, split)]

    async def write(self, runtime: Runtime, action: Action, target: Any, rows: Sequence[dict[str, Any]]) -> Outcomes:
        """One append for the batch: every example's outcome is the append's."""
        lines = [JsonlExample(id=row["id"], run_id=row["source_run_id"], split=row.get("split"), inputs=row["inputs"],
                              outputs=row["outputs"], metadata=row["metadata"]) for row in rows]
        result = await write(str(action.directory), str(target), lines)
        return dict.fromkeys((line["id"] for line in lines), result)

    async def write_threads(self, runtime: Runtime, action: Action, target: Any,
                            rows: Sequence[dict[str, Any]]) -> Outcomes:
        """One line per thread (its run id the last turn's); a read with fewer turns than the
        last line written for the thread is not appended (unchanged)."""
        key = contract.thread_turns_key(action.key)
        stored = runtime.redis.hmget(key, [row["id"] for row in rows]) if rows else []
        outcomes: Outcomes = {}
        fresh = []
        for row, have in zip(rows, stored, strict=True):
            if have is not None and int(have) > int(row["metadata"]["thread_turns"]):
                outcomes[row["id"]] = UNCHANGED
            else:
                fresh.append(row)
        if fresh:
            written = await self.write(runtime, action, target, fresh)
            outcomes.update(written)
            done = [row for row in fresh if not isinstance(written[row["id"]], RunError)]
            if done:
                with runtime.redis.pipeline() as pipe:
                    pipe.hset(key, mapping={row["id"]: int(row["metadata"]["thread_turns"]) for row in done})
                    pipe.expire(key, runtime.settings.keep_seconds)
                    pipe.execute()
        return outcomes


register(Jsonl())
