"""Thread rules: what a delivery is (decided by its rule, not by a guessed key), and one example per
thread through the rule's actions.

Since August 2026 a LangSmith rule matches runs or whole threads (`group_by` THREAD_ID or
TRAJECTORY_ID; docs PR langchain-ai/docs#5559). What a thread rule's webhook sends is documented
nowhere we could find, so nothing here bets on a shape:

- `rule_of` reads the rule's `group_by` through the v2 rules API (case-insensitive; cached
  RULE_CACHE_SECONDS for deliveries with runs, read afresh for one without); `plan` decides. A THREAD_ID rule's
  delivery is processed by thread, whatever it carries: a list of thread objects (`thread_id` or
  `id`) or runs with a thread id (`thread_id`, or metadata `thread_id`/`session_id`/
  `conversation_id`). A TRAJECTORY_ID rule, a body without runs whose rule is not a thread rule, a
  malformed `threads`: `Refused`, which the job path keeps as a failed job of its own (replayable).
- The first delivery of each thread rule logs its key names (never values), once across workers.
- `process_threads` reads each thread's root runs (its turns) through the v2 runs query, about
  THREADS_PER_QUERY threads a request, in the thread's project (the rule's when the body names
  none); joins the feedback of the last turn's root run; and gives each action one item per thread
  through its kind (workers/actions/base.py, `threads`): an example kind gets the thread's drafts
  (`thread_rows`, ids from "thread:" + thread id, then `write_threads`), a runs kind the thread
  itself (`write_threads`: the annotation queue's THREAD item). A stored example with more turns is
  never replaced by a shorter or stale read (the kind's `write_threads` applies
  workers/actions/base.py's `keep_longer`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis as redis_py

from lswh_core import contract
from lswh_core.rules import Action
from workers.actions import destination
from workers.actions.dataset_writer import SKIPPED, Outcome, Outcomes
from workers.bookkeeping import done
from workers.build import feedback
from workers.build.splits import assign_split
from workers.errors import InfoUnknown, RunError, classify
from workers.flow.outcome import worst
from workers.langsmith.door import QueryBackend, RuleInfo, Turn, chunks, split_on_refusal, thread_id_in
from workers.runtime import Runtime
from workers.transforms import ExampleDraft, HydratedThread, HydratedTurn, TransformError, apply_transform

log = logging.getLogger("lswh.threads")

THREAD_ID, TRAJECTORY_ID = "THREAD_ID", "TRAJECTORY_ID"
# A rule's group_by is read at most this often per worker for deliveries with runs (one request per
# rule per 5 minutes); a delivery without runs reads it afresh.
RULE_CACHE_SECONDS = 300.0
# Threads per v2 runs query: one `in(metadata_value, [...])` filter; their turns come back in pages.
THREADS_PER_QUERY = 20
# How far back a thread's turns are read: LangSmith's base trace retention is 14 days.
THREAD_LOOKBACK = dt.timedelta(days=14)
# Key names logged from a thread rule's first delivery: at most this many, each cut at KEY_CHARS.
MAX_KEYS, KEY_CHARS = 50, 64


class Refused(Exception):
    """The delivery cannot be processed as it is: kept, failed visibly, never retried blindly."""


@dataclass(frozen=True)
class ThreadRef:
    thread_id: str
    project_id: str | None = None

    @property
    def key(self) -> str:
        """What the job path records as done and what example ids derive from."""
        return thread_key(self.thread_id)


def thread_key(thread_id: str) -> str:
    return f"thread:{thread_id}"


# --- what a delivery is (pure) -------------------------------------------------------------------


def key_names(value: Any) -> list[str]:
    """A mapping's key names (never its values), sorted and cut, for logs and failure reasons."""
    if not isinstance(value, Mapping):
        return []
    names = sorted(str(k)[:KEY_CHARS] for k in value)
    return names[:MAX_KEYS] + ([f"... {len(names) - MAX_KEYS} more"] if len(names) > MAX_KEYS else [])


def unrecognised(delivery: Mapping[str, Any]) -> str:
    return f"unrecognised delivery shape (top-level keys: {', '.join(key_names(delivery)) or 'none'})"


def _text(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    return None


def threads_from_body(threads: Any) -> list[ThreadRef]:
    """The thread objects' ids (`thread_id`, else `id`; a bare string is an id), in order, once
    each; Refused naming the first item that has none."""
    if not isinstance(threads, list):
        raise Refused(f"malformed threads: a {type(threads).__name__}, not a list")
    found: dict[str, ThreadRef] = {}
    for index, item in enumerate(threads):
        if isinstance(item, Mapping):
            thread_id = _text(item.get("thread_id")) or _text(item.get("id"))
            project = _text(item.get("project_id")) or _text(item.get("session_id"))
        else:
            thread_id, project = _text(item), None
        if thread_id is None:
            raise Refused(f"malformed threads: threads[{index}] has no thread_id or id "
                          f"(keys: {', '.join(key_names(item)) or type(item).__name__})")
        found.setdefault(thread_id, ThreadRef(thread_id, project))
    return list(found.values())


def thread_id_of_run(run: Mapping[str, Any]) -> str | None:
    """A delivered run's thread: its own `thread_id`, else its metadata's (docs "Configure threads")."""
    extra = run.get("extra")
    metadata = extra.get("metadata") if isinstance(extra, Mapping) else None
    return _text(run.get("thread_id")) or thread_id_in(metadata) or thread_id_in(run.get("metadata"))


def threads_from_runs(runs: Sequence[Mapping[str, Any]]) -> tuple[list[ThreadRef], list[str]]:
    """The threads the runs belong to (project from the run's session_id), and the runs with none."""
    found: dict[str, ThreadRef] = {}
    without: list[str] = []
    for run in runs:
        thread_id = thread_id_of_run(run)
        if thread_id is None:
            without.append(str(run.get("id")))
            continue
        found.setdefault(thread_id, ThreadRef(thread_id, _text(run.get("session_id"))))
    return list(found.values()), without


@dataclass(frozen=True)
class Plan:
    """A thread rule's delivery: its rule, its threads, and runs that named no thread."""

    rule: RuleInfo
    threads: list[ThreadRef]
    runs_without_thread: list[str]


def plan(delivery: Mapping[str, Any], rule: RuleInfo | None, unread: str | None = None) -> Plan | None:
    """None: process the delivery's runs as runs. A Plan: process it by thread. Refused: neither.
    `unread`: why the rule could not be read (named in a refusal)."""
    has_runs = isinstance(delivery.get("runs"), list)
    group_by = rule.group_by if rule is not None else None
    if group_by == TRAJECTORY_ID:
        raise Refused(f"rule {rule.id if rule else '?'} groups by TRAJECTORY_ID: trajectory deliveries are not "
                      "supported yet (only THREAD_ID thread rules are)")
    if group_by != THREAD_ID:
        if has_runs:
            return None
        reason = unrecognised(delivery)
        if unread is not None:
            reason += f"; its rule's group_by could not be read: {unread}"
        elif "threads" in delivery:
            reason += (f"; it carries threads but rule {delivery.get('rule_id')} is not a thread rule "
                       f"(group_by {group_by or 'unset'})")
        raise Refused(reason)
    assert rule is not None
    if not has_runs and "threads" not in delivery:
        raise Refused(unrecognised(delivery))
    # Whatever it carries, both kinds of thread ids count, each thread once.
    listed = threads_from_body(delivery["threads"]) if "threads" in delivery else []
    from_runs, without = threads_from_runs(delivery["runs"]) if has_runs else ([], [])
    first: dict[str, ThreadRef] = {}
    for ref in [*from_runs, *listed]:
        first.setdefault(ref.thread_id, ref)
    refs = list(first.values())
    if without and not refs:
        raise Refused(f"thread rule {rule.id}: none of the {len(without)} runs carries a thread id "
                      "(thread_id, or metadata thread_id/session_id/conversation_id)")
    return Plan(rule, refs, without)


def shape_line(delivery: Mapping[str, Any]) -> str:
    """Key names of the body and of its first item of each list (never a value)."""
    parts = [f"top-level keys [{', '.join(key_names(delivery))}]"]
    for name in ("threads", "runs"):
        items = delivery.get(name)
        if isinstance(items, list) and items:
            first = items[0]
            parts.append(f"{name}[0] keys [{', '.join(key_names(first))}]" if isinstance(first, Mapping)
                         else f"{name}[0] is a {type(first).__name__}")
    return "; ".join(parts)


# --- the rule ------------------------------------------------------------------------------------

# Per worker process: rule id -> (read at, the rule or None, why it could not be read).
_RULES: dict[str, tuple[float, RuleInfo | None, str | None]] = {}


async def rule_of(runtime: Runtime, rule_id: str, *, fresh: bool) -> tuple[RuleInfo | None, str | None]:
    """The rule through the v2 rules API; else None and why (no such rule, or no rules API: a
    v1-only server has no thread rules). A transient failure raises (the job is retried)."""
    cached = _RULES.get(rule_id)
    if cached is not None and not fresh and time.monotonic() - cached[0] < RULE_CACHE_SECONDS:
        return cached[1], cached[2]
    why = None
    try:
        found = next(iter(await runtime.langsmith.rules(ids=[rule_id])), None)
        if found is None:
            why = f"no rule {rule_id} in this LangSmith workspace"
    except Exception as exc:
        error = classify(exc, f"reading rule {rule_id} (GET /api/v2/runs/rules)")
        if error.transient:
            raise error from None
        found, why = None, error.reason
        log.warning("%s: its group_by is unknown, so its deliveries with runs are taken for a runs rule's", why)
    _RULES[rule_id] = (time.monotonic(), found, why)
    return found, why


def log_first_shape(redis: redis_py.Redis, rule_id: str, delivery: Mapping[str, Any], keep_seconds: int) -> None:
    """Once per thread rule across all workers: the real shape becomes known from the log."""
    if redis.set(contract.thread_shape_logged_key(rule_id), b"1", nx=True, ex=keep_seconds):
        log.warning("first delivery of thread rule %s: %s (key names only; please report them if this "
                    "shape is new)", rule_id, shape_line(delivery), extra={"rule_id": rule_id})


# --- one thread, one example (pure) --------------------------------------------------------------


def default_inputs(turns: Sequence[Turn]) -> dict[str, Any]:
    """The thread's turns up to the last: each earlier turn's inputs and outputs, the last's inputs."""
    history: list[dict[str, Any]] = [{"inputs": t.inputs or {}, "outputs": t.outputs} for t in turns[:-1]]
    return {"turns": [*history, {"inputs": (turns[-1].inputs or {}) if turns else {}}]}


def thread_metadata(ref: ThreadRef, turns: Sequence[Turn], rule_id: str | None, scores: dict[str, Any]
                    ) -> dict[str, Any]:
    """The metadata keys the pipeline owns on a thread's example (an update changes only these)."""
    last = turns[-1]
    return {"rule_id": rule_id, "thread_id": ref.thread_id, "thread_turns": len(turns), "run_id": last.id,
            "trace_id": last.trace_id, "run_name": last.name, "feedback": scores}


def ordered(turns: Sequence[Turn]) -> list[Turn]:
    return sorted({t.id: t for t in turns}.values(), key=lambda t: (_moment(t.start_time), t.id))


def _moment(text: str | None) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def hydrated_thread(ref: ThreadRef, project_id: str | None, turns: Sequence[Turn], action: Action,
                    correction: dict[str, Any] | None, items: list[dict[str, Any]], metadata: dict[str, Any],
                    rule_id: str | None) -> HydratedThread:
    last = turns[-1]
    outputs = correction if correction is not None else (last.outputs if action.outputs != "correction" else None)
    return HydratedThread(
        id=ref.thread_id, thread_id=ref.thread_id, project_id=project_id, rule_id=rule_id,
        turns=[HydratedTurn(run_id=t.id, trace_id=t.trace_id, name=t.name, start_time=t.start_time,
                            inputs=t.inputs or {}, outputs=t.outputs) for t in turns],
        inputs=default_inputs(turns), outputs=outputs, run_outputs=last.outputs, correction=correction,
        feedback=items, metadata=metadata)


# --- the work ------------------------------------------------------------------------------------


@dataclass
class _Read:
    project_id: str | None
    turns: list[Turn]
    error: RunError | None = None


async def read_threads(runtime: Runtime, refs: Sequence[ThreadRef], rule: RuleInfo) -> dict[str, _Read]:
    """Each thread's turns, oldest first, or why they could not be read."""
    langsmith = runtime.langsmith
    try:
        backend = await langsmith.call(langsmith.backend)
    except InfoUnknown as exc:  # as read_runs: a guessed backend would send reads where the server has none
        return {ref.key: _Read(ref.project_id or rule.project_id, [], RunError(str(exc), transient=True))
                for ref in refs}
    result: dict[str, _Read] = {}
    by_project: dict[str, list[ThreadRef]] = defaultdict(list)
    for ref in refs:
        project = ref.project_id or rule.project_id
        if backend is QueryBackend.V1_ONLY:
            result[ref.key] = _Read(project, [], RunError(
                "reading a thread's runs needs LangSmith's v2 runs API; this server has the v1 API only",
                transient=False))
        elif project is None:
            result[ref.key] = _Read(None, [], RunError(
                f"the delivery names no project for thread {ref.thread_id} and rule {rule.id} has none "
                "(a dataset rule?)", transient=False))
        else:
            by_project[project].append(ref)
    end = dt.datetime.now(dt.UTC)
    start = end - THREAD_LOOKBACK

    async def one_project(project: str, batch: Sequence[ThreadRef]) -> None:
        async def query(part: Sequence[ThreadRef]) -> list[Turn]:
            return await langsmith.thread_turns(project, [r.thread_id for r in part], start=start, end=end)

        for part, found in await split_on_refusal(batch, query, "reading the thread's runs through the API"):
            if isinstance(found, RunError):
                result.update((r.key, _Read(project, [], found)) for r in part)
                continue
            by_thread: dict[str, list[Turn]] = defaultdict(list)
            for turn in found:
                by_thread[str(turn.thread_id)].append(turn)
            for ref in part:
                turns = ordered(by_thread.get(ref.thread_id, []))
                error = None if turns else RunError(
                    f"no root runs of thread {ref.thread_id} in project {project} since {start.isoformat()} "
                    "(metadata thread_id/session_id/conversation_id); retried in case LangSmith has not indexed "
                    "them yet", transient=True)
                result[ref.key] = _Read(project, turns, error)

    await asyncio.gather(*(one_project(project, batch) for project, refs_of in by_project.items()
                           for batch in chunks(refs_of, THREADS_PER_QUERY)))
    return result


async def process_threads(runtime: Runtime, refs: Sequence[ThreadRef], rule: RuleInfo, *,
                          delivery_id: str | None) -> Outcomes:
    """An outcome per thread key ("thread:<id>"); with a delivery id, the (action, thread) pairs done
    are recorded under it and not done again."""
    rule_id = rule.id
    actions = runtime.pipeline_rules.for_rule(rule_id).actions
    keys = [ref.key for ref in refs]
    finished: dict[tuple[str, str], Outcome] = {}
    if delivery_id is not None:
        pairs = [(a.key, key) for key in keys for a in actions]
        finished.update(done.read(runtime.redis, delivery_id, pairs))  # on the loop: workers/runtime.py
    todo = [ref for ref in refs if any((a.key, ref.key) not in finished for a in actions)]
    fresh: dict[tuple[str, str], str] = {}
    if todo:
        outcomes = await _act(runtime, todo, rule, actions, finished)
        for pair, outcome in outcomes.items():
            finished[pair] = outcome
            if not isinstance(outcome, RunError) and outcome != SKIPPED:
                fresh[pair] = outcome
    if delivery_id is not None:
        done.record(runtime.redis, delivery_id, fresh, ttl_seconds=runtime.settings.replay_seconds)
    return {key: worst(finished.get((a.key, key), SKIPPED) for a in actions) for key in keys}


async def _act(runtime: Runtime, refs: Sequence[ThreadRef], rule: RuleInfo, actions: Sequence[Action],
               finished: Mapping[tuple[str, str], Outcome]) -> dict[tuple[str, str], Outcome]:
    out: dict[tuple[str, str], Outcome] = {}
    reads = await read_threads(runtime, refs, rule)
    readable = [ref for ref in refs if reads[ref.key].error is None]
    for ref in refs:
        error = reads[ref.key].error
        if error is not None:
            out.update(((a.key, ref.key), error) for a in actions if (a.key, ref.key) not in finished)
    last_ids = [reads[ref.key].turns[-1].id for ref in readable]
    joined = await runtime.langsmith.feedback(last_ids) if last_ids else {}
    per_action: dict[str, list[_Drafts]] = defaultdict(list)
    to_send: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ref in readable:
        read = reads[ref.key]
        items = joined.get(read.turns[-1].id, [])
        for action in actions:
            pair = (action.key, ref.key)
            if pair in finished:
                continue
            kind = destination(action)
            if not kind.threads:
                out[pair] = RunError(f"action {action.kind!r} does not take a thread rule's threads", transient=False)
                continue
            if isinstance(items, RunError):
                out[pair] = items
                continue
            scores = feedback.latest_scores(items)
            correction = (feedback.correction_outputs(i for i in items if action.takes_correction_from(i.key))
                          if action.outputs != "run" else None)
            if not action.admits(has_correction=correction is not None, latest_scores=scores):
                out[pair] = SKIPPED
            elif kind.takes == "runs":
                to_send[action.key].append({"id": ref.key, "thread_id": ref.thread_id,
                                            "project_id": str(read.project_id)})
            else:
                metadata = thread_metadata(ref, read.turns, rule.id, scores)
                thread = hydrated_thread(ref, read.project_id, read.turns, action, correction,
                                         [feedback.plain_item(i) for i in items], metadata, rule.id)
                try:
                    drafts = apply_transform(action, thread)
                except TransformError as error:
                    out[pair] = error
                    continue
                if not drafts:
                    out[pair] = SKIPPED
                    continue
                split = assign_split(ref.key, action.splits) if action.splits else None
                per_action[action.key].append((ref, drafts, split, metadata))
    by_key = {a.key: a for a in actions}
    results = await asyncio.gather(
        *(_send(runtime, by_key[key], threads) for key, threads in to_send.items()),
        *(_write(runtime, by_key[key], threads) for key, threads in per_action.items()))
    for result in results:
        out.update(result)
    return out


# A thread's drafts for one example action: the thread, what its transform returned, its split, its metadata.
_Drafts = tuple[ThreadRef, list[ExampleDraft], str | None, dict[str, Any]]


async def _prepared(runtime: Runtime, action: Action, keys: Sequence[str]
                    ) -> tuple[Any, dict[tuple[str, str], Outcome] | None]:
    """(the action's target, None), or (None, the threads' outcomes) when its kind could not prepare it."""
    kind = destination(action)
    try:
        return await kind.prepare(runtime, action), None
    except Exception as exc:
        error = classify(exc, kind.preparing)
        return None, {(action.key, key): error for key in keys}


async def _send(runtime: Runtime, action: Action, threads: list[dict[str, Any]]) -> dict[tuple[str, str], Outcome]:
    """A kind that takes the threads themselves (the annotation queue's THREAD items): an outcome per thread."""
    target, failed = await _prepared(runtime, action, [thread["id"] for thread in threads])
    if failed is not None:
        return failed
    by_thread = await destination(action).write_threads(runtime, action, target, threads)
    missing = RunError("no outcome from the writer", transient=True)
    return {(action.key, thread["id"]): by_thread.get(thread["id"]) or missing for thread in threads}


async def _write(runtime: Runtime, action: Action, threads: list[_Drafts]) -> dict[tuple[str, str], Outcome]:
    """One action's examples, one per thread (more when a transform returns several)."""
    target, failed = await _prepared(runtime, action, [ref.key for ref, _, _, _ in threads])
    if failed is not None:
        return failed
    kind = destination(action)
    owner: dict[str, str] = {}  # example id -> thread key
    rows: list[dict[str, Any]] = []
    for ref, drafts, split, metadata in threads:
        for row in kind.thread_rows(target, ref.key, drafts, split, metadata):
            owner[row["id"]] = ref.key
            rows.append(row)
    by_example: Outcomes = await kind.write_threads(runtime, action, target, rows)
    per_thread: dict[str, list[Outcome]] = defaultdict(list)
    for row in rows:
        per_thread[owner[row["id"]]].append(
            by_example.get(row["id"]) or RunError("no outcome from the writer", transient=True))
    return {(action.key, key): worst(outcomes) for key, outcomes in per_thread.items()}
