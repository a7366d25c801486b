"""One slice of runs in, actions done: feedback, filters, hydrate, read the rest in bulk, transform, act.

Each run goes to every action of its rule (lswh_core/rules.py; without a rules file, one `dataset`
action). Per action: its correction keys and outputs policy pick the outputs, its score filter
keeps or skips the run, its transforms shape the examples, its split and dedup apply, and the
action's own module writes (workers/actions/). The (action, run) pairs done are recorded per
delivery (workers/bookkeeping/done.py), so a retry redoes only the actions that failed; a run's
outcome is the worst of its actions' (workers/flow/outcome.py).

A delivery is processed a slice at a time (workers/jobs.py): at most SLICE_RUNS runs, and
presigned objects are fetched only until the slice holds SLICE_BYTES; the runs not reached wait
for the next slice. Consecutive slices of a delivery overlap (`Relay`): the next one starts
reading once this one has started its last fetch, and claims its dedup keys only after this one
has claimed its own, so a worker holds at most two slices, one finishing and one reading.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lswh_core.rules import Action
from workers.actions import destination
from workers.actions.dataset_writer import SKIPPED, Outcome, Outcomes
from workers.bookkeeping import done, metrics
from workers.build import dedup, feedback
from workers.build.examples import example_metadata
from workers.build.splits import assign_split
from workers.errors import RunError, classify
from workers.fetch.hydrate import Hydrated, Hydrator, settle_from_api
from workers.flow.outcome import worst
from workers.langsmith.door import RunRef
from workers.runtime import S3_CONCURRENCY, Runtime
from workers.transforms import ExampleDraft, HydratedRun, TransformError, apply_transform

# A slice pays a few round trips in sequence (feedback alongside the first inputs, the other
# objects, API reads, example list and write): bench/workers.py measured 302 runs/s with slices
# of 100 small runs against 428 for the whole delivery at once, and slices of 500 win that back.
# Memory is bounded by SLICE_BYTES (objects are fetched only until a slice holds that much), not
# by the run count.
SLICE_RUNS = 500
SLICE_BYTES = 16 * 1024 * 1024
# Runs per bulk read through the API: one v2 page per slice (LangSmith's v2 query allows up to
# 1,000; the v1 query 100). Memory does not change with the page: a slice's pages are read together
# (LangSmith.read_runs gathers them) and the slice holds every run read until it is written, so
# the bound is SLICE_RUNS runs, in one page or in five; fewer pages cost fewer requests.
API_PAGE = SLICE_RUNS

T = TypeVar("T")


@dataclass
class Relay:
    """How consecutive slices of one delivery overlap (workers/jobs.py). `started` gets the runs
    this slice leaves to the next one once it has started every fetch it will start: the next
    slice may start reading then. `claimed` resolves once this slice has claimed its dedup keys;
    `after` is the previous slice's `claimed`, awaited before this slice claims, so of two runs
    with the same inputs the earlier one claims first, as within one slice."""

    started: asyncio.Future[list[dict[str, Any]]]
    claimed: asyncio.Future[None]
    after: asyncio.Future[None] | None = None

    @classmethod
    def following(cls, previous: Relay | None) -> Relay:
        loop = asyncio.get_running_loop()
        return cls(loop.create_future(), loop.create_future(), previous.claimed if previous is not None else None)


def _resolve(future: asyncio.Future[T] | None, value: T) -> None:
    if future is not None and not future.done():
        future.set_result(value)


async def _hydrate_bounded(hydrate: Callable[[Hydrated], Awaitable[None]], pending: list[Hydrated],
                           max_bytes: int, all_started: asyncio.Future[list[Hydrated]]
                           ) -> tuple[list[Hydrated], list[Hydrated]]:
    """Hydrate runs in order, S3_CONCURRENCY at a time, starting no new run once the runs done
    hold max_bytes (a run the feedback skipped counts its inputs too); the runs not started are
    handed back for the next slice, and to `all_started` as soon as no run will start any more."""
    done: list[Hydrated] = []
    in_flight: set[asyncio.Future[Hydrated]] = set()
    held = index = 0

    async def one(item: Hydrated) -> Hydrated:
        try:
            await hydrate(item)
        except Exception as exc:
            item.error = classify(exc, "hydrating")
        return item

    try:
        while index < len(pending) or in_flight:
            while index < len(pending) and len(in_flight) < S3_CONCURRENCY and held < max_bytes:
                in_flight.add(asyncio.ensure_future(one(pending[index])))
                index += 1
            if index == len(pending) or held >= max_bytes:  # held only grows: nothing more starts
                _resolve(all_started, pending[index:])
            if not in_flight:
                break
            finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for future in finished:
                item = future.result()
                held += item.bytes
                done.append(item)
        _resolve(all_started, pending[index:])
    finally:  # cancelled with the slice (its feedback read failed): no fetch outlives it
        for future in in_flight:
            future.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
    return done, pending[index:]


async def process_slice(runtime: Runtime, runs: list[dict[str, Any]], rule_id: str | None, *,
                        delivery_id: str | None = None, relay: Relay | None = None
                        ) -> tuple[Outcomes, list[dict[str, Any]]]:
    """An outcome for each run processed, and the runs deferred to the next slice. With a
    `delivery_id`, the (action, run) pairs done are recorded under it and not done again. With a
    `relay`, the slice overlaps its neighbours (`Relay`); `relay.started` gets the deferred runs
    at the latest when the slice returns."""
    started = time.perf_counter()
    rule = runtime.pipeline_rules.for_rule(rule_id)
    # Each action's target (the dataset kind's dataset id), prepared while the slice reads.
    targets = {a.key: asyncio.ensure_future(destination(a).prepare(runtime, a)) for a in rule.actions}
    try:
        return await _Slice(runtime, rule_id, rule.actions, delivery_id, targets, relay).run(runs)
    finally:
        if relay is not None:  # the next slice never waits on a slice that failed
            _resolve(relay.claimed, None)
        for task in targets.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*targets.values(), return_exceptions=True)
        metrics.observe_slice(time.perf_counter() - started, len(runs))


_Drafts = tuple[str, list[ExampleDraft], str | None]  # run id, its examples, its split


@dataclass
class _Wanted:
    """One run's pending example actions, with the correction each one's keys pick."""

    actions: list[tuple[Action, dict[str, Any] | None]] = field(default_factory=list)
    fields: set[str] = field(default_factory=set)


# The runs wanted as examples (delivery order), the runs to send by action key, those actions, each run's feedback.
_Decision = tuple[dict[str, _Wanted], dict[str, list[dict[str, Any]]], dict[str, Action], dict[str, list[Any]]]


class _Slice:
    def __init__(self, runtime: Runtime, rule_id: str | None, actions: tuple[Action, ...], delivery_id: str | None,
                 targets: Mapping[str, asyncio.Future[Any]],
                 relay: Relay | None = None) -> None:
        self.runtime = runtime
        self.rule_id = rule_id
        self.actions = actions
        self.delivery_id = delivery_id
        self.targets = targets  # by action key
        # (action key, run id) -> outcome: read back from earlier attempts, then this one's.
        self.outcomes: dict[tuple[str, str], Outcome] = {}
        self.fresh: dict[tuple[str, str], str] = {}  # done in this attempt, to record
        self.relay = relay
        self.deferred: list[dict[str, Any]] = []  # the runs left for the next slice

    def hand_off(self, deferred: list[dict[str, Any]]) -> None:
        """Every fetch started: the next slice may start reading (`Relay.started`)."""
        self.deferred = deferred
        _resolve(self.relay.started if self.relay is not None else None, deferred)

    def settle(self, action: Action, run_id: str, outcome: Outcome) -> None:
        self.outcomes[(action.key, run_id)] = outcome
        if not isinstance(outcome, RunError) and outcome != SKIPPED:
            # Skips are decided again next time: a score may have arrived since.
            self.fresh[(action.key, run_id)] = outcome

    async def run(self, runs: list[dict[str, Any]]) -> tuple[Outcomes, list[dict[str, Any]]]:
        ids = [str(run["id"]) for run in runs]
        if self.delivery_id is not None:  # Redis on the loop: workers/runtime.py says why
            pairs = [(a.key, run_id) for run_id in ids for a in self.actions]
            self.outcomes.update(done.read(self.runtime.redis, self.delivery_id, pairs))
        todo = [run for run in runs if any((a.key, str(run["id"])) not in self.outcomes for a in self.actions)]
        if todo:
            await self._act(todo)
        self.hand_off(self.deferred)
        if self.delivery_id is not None:
            done.record(self.runtime.redis, self.delivery_id, self.fresh,
                        ttl_seconds=self.runtime.settings.replay_seconds)
        later = {str(run["id"]) for run in self.deferred}
        return ({run_id: worst(self.outcomes.get((a.key, run_id), SKIPPED) for a in self.actions)
                 for run_id in ids if run_id not in later}, self.deferred)

    async def _act(self, runs: list[dict[str, Any]]) -> None:
        # The feedback read and the first object fetches overlap: every example action needs the
        # run's inputs, so they are fetched while the feedback is read; the rest (outputs, only
        # when used) once the feedback has decided the run's actions. A run that the feedback
        # then skips, or whose feedback read failed, has fetched its inputs for nothing.
        reading = asyncio.ensure_future(self.runtime.langsmith.feedback([str(run["id"]) for run in runs]))
        decided: asyncio.Future[dict[str, _Wanted]] = asyncio.get_running_loop().create_future()
        hydrator = Hydrator(self.runtime)

        async def hydrate(item: Hydrated) -> None:
            await hydrator.without_api(item, ("inputs",))
            # A run waiting here keeps its place among the S3_CONCURRENCY in flight, so the slice
            # starts no more runs than it did with the feedback read first.
            want = (await decided).get(item.id)
            if want is not None and item.error is None:
                await hydrator.without_api(item, tuple(sorted(want.fields - {"inputs"})))

        makes_examples = {str(run["id"]): Hydrated(run) for run in runs if any(
            (a.key, str(run["id"])) not in self.outcomes and destination(a).takes != "runs" for a in self.actions)}
        all_started: asyncio.Future[list[Hydrated]] = asyncio.get_running_loop().create_future()
        fetching = asyncio.ensure_future(
            _hydrate_bounded(hydrate, list(makes_examples.values()), SLICE_BYTES, all_started))
        try:
            joined = await reading
            wanted, to_send, run_actions, items_of = self._decide(runs, joined)
            decided.set_result(wanted)
            # Runs the feedback skipped or failed are settled already: neither written nor deferred.
            self.hand_off([item.run for item in await all_started if item.id in wanted])
            fetched, _ = await fetching
        finally:
            for task in (reading, fetching):
                task.cancel()
            await asyncio.gather(reading, fetching, return_exceptions=True)
        hydrated = [item for item in fetched if item.id in wanted]
        later = {str(run["id"]) for run in self.deferred}
        await self._read_rest(hydrated)

        work = [self._send(run_actions[key], [r for r in sent if str(r["id"]) not in later])
                for key, sent in to_send.items()]
        work.append(self._examples(hydrated, wanted, items_of))
        await asyncio.gather(*work)

    def _decide(self, runs: list[dict[str, Any]], joined: Mapping[str, list[Any] | RunError]) -> _Decision:
        """Per run and pending action, from its feedback: skipped, sent (an annotation queue), or
        wanted as examples."""
        wanted: dict[str, _Wanted] = {}
        # Actions that take the runs themselves (an annotation queue), by action key.
        to_send: dict[str, list[dict[str, Any]]] = defaultdict(list)
        run_actions: dict[str, Action] = {}
        items_of: dict[str, list[Any]] = {}
        for run in runs:
            run_id = str(run["id"])
            items = joined.get(run_id, [])
            pending = [a for a in self.actions if (a.key, run_id) not in self.outcomes]
            if isinstance(items, RunError):
                for action in pending:
                    self.settle(action, run_id, items)
                continue
            items_of[run_id] = items
            scores = feedback.latest_scores(items)
            for action in pending:
                correction = (feedback.correction_outputs(i for i in items if action.takes_correction_from(i.key))
                              if action.outputs != "run" else None)
                if not action.admits(has_correction=correction is not None, latest_scores=scores):
                    self.settle(action, run_id, SKIPPED)
                elif destination(action).takes == "runs":
                    to_send[action.key].append(run)
                    run_actions[action.key] = action
                else:
                    want = wanted.setdefault(run_id, _Wanted())
                    want.actions.append((action, correction))
                    want.fields.add("inputs")
                    # The run's own outputs only when used: today's one fetch fewer per corrected run.
                    if correction is None or action.transforms:
                        want.fields.add("outputs")
        return wanted, to_send, run_actions, items_of

    async def _read_rest(self, hydrated: list[Hydrated]) -> None:
        need_api = [item for item in hydrated if item.from_api and item.error is None]
        if not need_api:
            return
        found = await self.runtime.langsmith.read_runs(
            [RunRef.of(item.run) for item in need_api],
            inputs=any("inputs" in item.from_api for item in need_api),
            outputs=any("outputs" in item.from_api for item in need_api),
            page_size=API_PAGE)
        for item in need_api:
            settle_from_api(item, found.get(item.id))

    async def _target(self, action: Action, run_ids: list[str]) -> tuple[bool, Any]:
        """(True, the action's prepared target), or (False, None) with its runs settled as failed."""
        try:
            return True, await self.targets[action.key]
        except Exception as exc:
            error = classify(exc, destination(action).preparing)
            for run_id in run_ids:
                self.settle(action, run_id, error)
            return False, None

    async def _send(self, action: Action, runs: list[dict[str, Any]]) -> None:
        """An action that takes the runs themselves: an outcome per run id."""
        if not runs:
            return
        ready, target = await self._target(action, [str(run["id"]) for run in runs])
        if ready:
            for run_id, outcome in (await destination(action).write(self.runtime, action, target, runs)).items():
                self.settle(action, run_id, outcome)

    async def _examples(self, hydrated: list[Hydrated], wanted: dict[str, _Wanted], items_of: dict[str, list[Any]]
                        ) -> None:
        """Transform, split and dedup each run for each example action, then write per action."""
        per_action: dict[str, tuple[Action, list[_Drafts]]] = {}
        # Delivery order, not the order fetches finished: of two runs with the same inputs under
        # dedup, the earlier one is written, every time.
        order = {run_id: index for index, run_id in enumerate(wanted)}
        for item in sorted(hydrated, key=lambda item: order[item.id]):
            for action, correction in wanted[item.id].actions:
                if item.error is not None:
                    self.settle(action, item.id, item.error)
                    continue
                try:
                    drafts = apply_transform(action, self._hydrated_run(item, action, correction, items_of[item.id]))
                except TransformError as error:
                    self.settle(action, item.id, error)
                    continue
                if not drafts:
                    self.settle(action, item.id, SKIPPED)  # the transform returned None
                    continue
                split = assign_split(item.id, action.splits) if action.splits else None
                per_action.setdefault(action.key, (action, []))[1].append((item.id, drafts, split))
        if self.relay is not None and self.relay.after is not None:
            await self.relay.after  # the previous slice's runs claim their inputs first
        staged = await asyncio.gather(*(self._stage(action, runs) for action, runs in per_action.values()))
        # (A run of the next slice skipped as a duplicate of one here that then fails for good
        # stays skipped, as a duplicate within one slice does.)
        _resolve(self.relay.claimed if self.relay is not None else None, None)
        await asyncio.gather(*(self._write(*stage) for stage in staged if stage is not None))

    def _hydrated_run(self, item: Hydrated, action: Action, correction: dict[str, Any] | None,
                      items: list[Any]) -> HydratedRun:
        run_outputs = item.values.get("outputs")
        outputs = correction if correction is not None else (run_outputs if action.outputs != "correction" else None)
        inputs = item.values.get("inputs") or {}
        metadata = example_metadata(item.run, self.rule_id, feedback.latest_scores(items))
        return HydratedRun(id=item.id, trace_id=item.run.get("trace_id"), name=item.run.get("name"),
                           run_type=item.run.get("run_type"), rule_id=self.rule_id, inputs=inputs, outputs=outputs,
                           run_outputs=run_outputs, correction=correction,
                           feedback=[feedback.plain_item(i) for i in items], metadata=metadata, run=item.run)

    async def _stage(self, action: Action, runs: list[_Drafts]
                     ) -> tuple[Action, Any, list[dict[str, Any]], dict[str, str | None]] | None:
        """One action's rows and their dedup claims, to write; None when its target failed."""
        ready, target = await self._target(action, [run_id for run_id, _, _ in runs])
        if not ready:
            return None
        kind = destination(action)
        examples = [row for run_id, drafts, split in runs for row in kind.rows(target, run_id, drafts, split)]
        return action, target, examples, self._claim(action, examples) if action.dedup else {}

    async def _write(self, action: Action, target: Any, examples: list[dict[str, Any]],
                     claims: dict[str, str | None]) -> None:
        """One action's write of the rows not claimed by another; a run's outcome is the worst of
        its examples'."""
        to_write = [e for e in examples if claims.get(e["id"]) is None]
        by_example: Outcomes = dict.fromkeys((e["id"] for e in examples if claims.get(e["id"]) is not None), SKIPPED)
        if to_write:
            by_example.update(await destination(action).write(self.runtime, action, target, to_write))
        per_run: dict[str, list[Outcome]] = defaultdict(list)
        for example in examples:
            outcome = by_example.get(example["id"]) or RunError("no outcome from the writer", transient=True)
            per_run[example["source_run_id"]].append(outcome)
            if action.dedup and isinstance(outcome, RunError) and not outcome.transient:
                # Never written: a later run with these inputs must not be skipped for it.
                dedup.release(self.runtime.redis, action.key, dedup.content_hash(example["inputs"]), example["id"])
        for run_id, outcomes in per_run.items():
            self.settle(action, run_id, worst(outcomes))

    def _claim(self, action: Action, examples: list[dict[str, Any]]) -> dict[str, str | None]:
        """{example id: None if it may be written, else the example that wrote its inputs first},
        shared by every worker through Redis; the memory is per action (its destination)."""
        return dedup.claim_many(self.runtime.redis, action.key,
                                {e["id"]: dedup.content_hash(e["inputs"]) for e in examples},
                                ttl_seconds=self.runtime.settings.keep_seconds)
