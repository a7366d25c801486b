"""The one door to LangSmith: every call the workers make to it goes through `LangSmith`.

Two SDK clients sit behind it. The hand-written `Client` (requests) reads feedback and
datasets and writes examples; the generated v2 client (`AsyncLangsmith`, on httpx2) runs the v2
runs query. Both send through workers/langsmith_http.py, so both draw from the shared rate
budget and neither retries or sleeps on its own. Nothing here calls a deprecated SDK method:
`read_run`/`list_runs` (removed after 2027-01-31) are replaced by bulk queries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import orjson
import redis
import requests
from langsmith import AsyncLangsmith, Client
from langsmith import utils as ls_utils
from langsmith.types.run_select_field import RunSelectField

from lswh_core.settings import Settings
from workers.errors import TRANSIENT_STATUSES, LangSmithUnavailable, RunError, classify, parse_retry_after
from workers.langsmith_http import Budget, BudgetedAdapter, BudgetedTransport, Recorder, RouteOf

T = TypeVar("T")
R = TypeVar("R")

TIMEOUT_MS = (5_000, 30_000)
V1_QUERY_PAGE = 100  # POST /runs/query answers 422 above 100 (SDK list_runs pages at 100)
V2_QUERY_PAGE_MAX = 1000  # query_v2's page_size bounds (SDK: resources/runs/runs.py)
FEEDBACK_CHUNK = 100  # run ids per GET /feedback (URL length; the API pages at 100)
EXAMPLES_CHUNK = 100  # ids per GET /examples (URL length)
ANNOTATION_QUEUE_PAGE = 100
# The v2 query filters on start_time; LangSmith stores microseconds, deliveries may round.
WINDOW_SLACK = dt.timedelta(seconds=1)
MIN_V2_VERSION = (0, 16, 0)  # SDK: Client.runs checks _check_backend_version(..., "0.16.0")
RULES_PAGE = 100  # GET /api/v2/runs/rules pages at most 100 rules
# Runs per page of a rule's matching runs: query_v2's maximum, so a backfill of 10,000 runs lists
# them in about 10 requests (bench/backfill.py).
MATCH_PAGE = V2_QUERY_PAGE_MAX
# A listing with inputs and outputs (a backfill) holds one page at a time, so its pages are sized
# by bytes: the first is small, each next one as many runs as fit DATA_PAGE_BYTES at the last
# page's bytes per run (query_v2: `page_size` is "the maximum number of runs to return in this
# response", each request its own). Runs up to 16 KB still go 1,000 a page; 256 KB runs 64.
FIRST_DATA_PAGE = 100
DATA_PAGE_BYTES = 16 * 1024 * 1024
# What a reconciled run needs in its synthetic delivery: the job path reads the rest in bulk.
LOCATOR_SELECTS: list[RunSelectField] = ["ID", "PROJECT_ID", "START_TIME", "TRACE_ID", "NAME"]
# A backfill reads inputs and outputs while listing and hands them on (workers/synthetic.py).
DATA_SELECTS: list[RunSelectField] = [*LOCATOR_SELECTS, "INPUTS", "OUTPUTS"]


class QueryBackend(enum.Enum):
    """Which run-query backends a LangSmith server has, from `/info`'s instance flags, decided
    as the SDK does (langsmith/_internal/_v2_migration_utils.py `get_query_backend`):
    `ch_query_enabled` defaults on when absent, `sdb_query_enabled` off."""

    V1_ONLY = "clickhouse_only"
    V2_ONLY = "smithdb_only"
    BOTH = "dual"

    @classmethod
    def of(cls, flags: Mapping[str, Any] | None, version: str | None) -> QueryBackend:
        flags = flags or {}
        v1 = bool(flags.get("ch_query_enabled", True))
        v2 = bool(flags.get("sdb_query_enabled", False)) and _version(version) >= MIN_V2_VERSION
        if v2 and not v1:
            return cls.V2_ONLY
        return cls.BOTH if v2 else cls.V1_ONLY


def _version(text: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (text or "0").split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@dataclass(frozen=True)
class RunRef:
    """What locating a run through the API needs: its id, project and start time."""

    id: str
    project_id: str | None = None
    start_time: str | None = None

    @classmethod
    def of(cls, run: Mapping[str, Any]) -> RunRef:
        return cls(str(run["id"]), _text(run.get("session_id")), _text(run.get("start_time")))


@dataclass(frozen=True)
class ApiRun:
    id: str
    name: str | None
    trace_id: str | None
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None


@dataclass(frozen=True)
class RuleInfo:
    """What the pipeline keeps of an automation rule. Never the rule object itself: its `webhooks`
    hold our URL with the secret. `points_here` says whether one of those URLs starts with
    LSWH_PUBLIC_URL, decided while reading and the URL dropped."""

    id: str
    project_id: str | None
    dataset_id: str | None
    filter: str | None
    trace_filter: str | None
    tree_filter: str | None
    is_enabled: bool
    sampling_rate: float
    points_here: bool = False


def rule_info(rule: Any, public_url: str | None) -> RuleInfo:
    """A generated-client `Rule` (or its dict) reduced to RuleInfo."""
    get = rule.get if isinstance(rule, Mapping) else lambda name: getattr(rule, name, None)
    urls = []
    for hook in get("webhooks") or []:
        url = hook.get("url") if isinstance(hook, Mapping) else getattr(hook, "url", None)
        if isinstance(url, str):
            urls.append(url)
    rate = get("sampling_rate")
    return RuleInfo(
        id=str(get("id")), project_id=_text(get("project_id")), dataset_id=_text(get("dataset_id")),
        filter=_text(get("filter")), trace_filter=_text(get("trace_filter")), tree_filter=_text(get("tree_filter")),
        is_enabled=bool(get("is_enabled")), sampling_rate=float(rate) if rate is not None else 1.0,
        points_here=bool(public_url) and any(points_at(url, str(public_url)) for url in urls))


def points_at(url: str, public_url: str) -> bool:
    """A webhook URL sends to this deployment when it starts with LSWH_PUBLIC_URL (on a path
    boundary: https://hooks.example.com must not claim https://hooks.example.com.evil)."""
    base = public_url.rstrip("/")
    return url == base or url.startswith((base + "/", base + "?"))


@dataclass(frozen=True)
class Locator:
    """A matched run as a synthetic delivery carries it: where to find it, and its inputs and
    outputs when they were read with it (the job path takes those inline and reads the rest)."""

    id: str
    session_id: str | None
    start_time: str | None
    trace_id: str | None
    name: str | None
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None

    def as_run(self) -> dict[str, Any]:
        run: dict[str, Any] = {"id": self.id, "session_id": self.session_id, "start_time": self.start_time,
                               "trace_id": self.trace_id, "name": self.name}
        # Only values read: a null here would be taken as unknown and read again, so it is left out.
        if self.inputs is not None:
            run["inputs"] = self.inputs
        if self.outputs is not None:
            run["outputs"] = self.outputs
        return run


def _locator(run: Any) -> Locator:
    get = run.get if isinstance(run, Mapping) else lambda name: getattr(run, name, None)
    start = get("start_time")
    start_text = start.isoformat() if isinstance(start, dt.datetime) else _text(start)
    return Locator(id=str(get("id")), session_id=_text(get("project_id")), start_time=start_text,
                   trace_id=_text(get("trace_id")), name=_text(get("name")),
                   inputs=_dict_or_none(get("inputs")), outputs=_dict_or_none(get("outputs")))


def _data_bytes(locator: Locator) -> int:
    return sum(len(orjson.dumps(value)) for value in (locator.inputs, locator.outputs) if value is not None)


def next_data_page(held_bytes: int, runs: int) -> int:
    """Runs in the next page of a listing with data: as many as fit DATA_PAGE_BYTES at the last
    page's bytes per run, between 1 and MATCH_PAGE."""
    per_run = max(1, held_bytes // max(1, runs))
    return max(1, min(MATCH_PAGE, DATA_PAGE_BYTES // per_run))


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _moment(value: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class ReadPlan:
    """Which runs go to which query; `unlocatable` are runs no query this server has can find."""

    v2: dict[str, list[RunRef]]  # project id -> runs
    v1: list[RunRef]
    unlocatable: list[RunRef]


def plan_reads(refs: Iterable[RunRef], backend: QueryBackend) -> ReadPlan:
    """v2 where the server has it and the run can be located (project and start time: the v2
    query needs both); v1 where the server has it; else the run cannot be read."""
    v2: dict[str, list[RunRef]] = {}
    v1: list[RunRef] = []
    unlocatable: list[RunRef] = []
    for ref in refs:
        locatable = ref.project_id is not None and ref.start_time is not None and _moment(ref.start_time)
        if backend is not QueryBackend.V1_ONLY and locatable:
            v2.setdefault(str(ref.project_id), []).append(ref)
        elif backend is not QueryBackend.V2_ONLY:
            v1.append(ref)
        else:
            unlocatable.append(ref)
    return ReadPlan(v2, v1, unlocatable)


def start_window(refs: Sequence[RunRef]) -> tuple[dt.datetime, dt.datetime]:
    """The start-time window that holds every run: without one the v2 query covers only the last
    day (SDK: query_v2's min_start_time defaults to 1 day ago)."""
    moments = [m for m in (_moment(r.start_time or "") for r in refs) if m is not None]
    return min(moments) - WINDOW_SLACK, max(moments) + WINDOW_SLACK


def selects(*, inputs: bool, outputs: bool) -> list[str]:
    """Only the fields a read needs (the v2 query returns only `id` without `selects`)."""
    fields = ["ID", "NAME", "TRACE_ID"]
    return fields + (["INPUTS"] if inputs else []) + (["OUTPUTS"] if outputs else [])


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _api_run(run: Any) -> ApiRun:
    get = run.get if isinstance(run, Mapping) else lambda name: getattr(run, name, None)
    return ApiRun(id=str(get("id")), name=_text(get("name")), trace_id=_text(get("trace_id")),
                  inputs=_dict_or_none(get("inputs")), outputs=_dict_or_none(get("outputs")))


async def split_on_refusal(items: Sequence[T], call: Callable[[Sequence[T]], Awaitable[R]], doing: str
                           ) -> list[tuple[Sequence[T], R | RunError]]:
    """Call with the whole batch; when LangSmith refuses it for good (a 4xx), split it in halves
    until the items at fault are alone, so one bad run never costs its neighbours. A transient
    failure is the whole batch's: it is retried later as a whole."""
    try:
        return [(items, await call(items))]
    except Exception as exc:
        error = classify(exc, doing)
        if error.transient or len(items) == 1:
            return [(items, error)]
    middle = len(items) // 2
    first, second = await asyncio.gather(split_on_refusal(items[:middle], call, doing),
                                         split_on_refusal(items[middle:], call, doing))
    return first + second


def _raise_transient(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """The final transient answer leaves the SDK as LangSmithUnavailable, before the SDK's own
    retry loop could sleep on it (it sleeps a Retry-After, or 30 s without one, on a 429)."""
    if response.status_code in TRANSIENT_STATUSES:
        raise LangSmithUnavailable(response.status_code, parse_retry_after(response.headers.get("Retry-After")))


def openapi_base_url(api_url: str) -> str:
    """The generated client's base URL from LANGSMITH_ENDPOINT, as the SDK derives it
    (client.py `_get_openapi_base_url`): self-hosted endpoints end in /api/v1."""
    api_url = api_url.rstrip("/")
    for suffix in ("/api/v1", "/api"):
        if api_url.endswith(suffix):
            return api_url[: -len(suffix)]
    return api_url


class LangSmith:
    """Runs, feedback, datasets and examples, through the shared budget.

    Blocking SDK calls run on the worker's SDK thread pool (`call`); the v2 client lives on the
    worker's one I/O loop, where every coroutine here runs.
    """

    def __init__(self, *, call: Callable[..., Awaitable[Any]], budget: Budget | None, route_of: RouteOf,
                 recorder: Recorder | None = None, api_url: str | None = None, api_key: str | None = None) -> None:
        self.call = call
        self.budget = budget
        self.route_of = route_of
        self.recorder = recorder
        session = requests.Session()
        session.hooks["response"].append(_raise_transient)
        self.client = Client(
            api_url=api_url or os.environ.get("LANGSMITH_ENDPOINT") or None,
            api_key=api_key or os.environ.get("LANGSMITH_API_KEY") or None,
            timeout_ms=TIMEOUT_MS,
            session=session,
            auto_batch_tracing=False,
        )
        # After the Client: it mounts its own retrying adapter on the session.
        adapter = BudgetedAdapter(budget, route_of, recorder)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._v2: AsyncLangsmith | None = None

    @classmethod
    def for_settings(cls, settings: Settings, connection: redis.Redis, *, call: Callable[..., Awaitable[Any]],
                     recorder: Recorder | None = None) -> LangSmith:
        from workers.budget import RateBudget, route_of

        api_key = os.environ.get("LANGSMITH_API_KEY") or ""
        budget = RateBudget(connection, api_key, settings.langsmith_rate_limits)
        return cls(call=call, budget=budget, route_of=route_of, recorder=recorder, api_key=api_key or None)

    @property
    def api_url(self) -> str:
        return str(self.client.api_url)

    def backend(self) -> QueryBackend:
        info = self.client.info  # GET /info once per client (the SDK caches it)
        return QueryBackend.of(info.instance_flags, info.version)

    def v2(self) -> AsyncLangsmith:
        """Made on first use, on the I/O loop (its httpx client is bound to that loop)."""
        if self._v2 is None:
            timeout = httpx2.Timeout(TIMEOUT_MS[1] / 1000, connect=TIMEOUT_MS[0] / 1000)
            http = httpx2.AsyncClient(transport=BudgetedTransport(self.budget, self.route_of, self.recorder),
                                     timeout=timeout, trust_env=False, follow_redirects=False)
            # The SDK annotates with httpx but runs on httpx2 (langsmith/_httpx.py): same API.
            self._v2 = AsyncLangsmith(api_key=self.client.api_key, base_url=openapi_base_url(self.api_url),
                                      max_retries=0, timeout=timeout, http_client=http)  # type: ignore[arg-type]
        return self._v2

    # --- runs ---------------------------------------------------------------------------

    async def read_runs(self, refs: Sequence[RunRef], *, inputs: bool, outputs: bool, page_size: int
                        ) -> dict[str, ApiRun | RunError]:
        """The runs LangSmith returns, by id; a run it refuses maps to its error; a run it does
        not return is absent. Pages are at most `page_size` runs (a slice)."""
        backend = await self.call(self.backend)
        plan = plan_reads(refs, backend)
        found: dict[str, ApiRun | RunError] = {}
        for ref in plan.unlocatable:
            found[ref.id] = RunError("cannot locate run: it has no session_id or start_time, which the v2 runs "
                                     "query needs, and this LangSmith has no v1 runs query", transient=False)
        fields = selects(inputs=inputs, outputs=outputs)

        async def v2_batch(batch: Sequence[RunRef]) -> list[ApiRun]:
            return await self._query_v2(batch, fields, page_size)

        async def v1_batch(batch: Sequence[RunRef]) -> list[ApiRun]:
            return await self.call(self._query_v1, [r.id for r in batch], [f.lower() for f in fields])

        batches: list[Awaitable[list[tuple[Sequence[RunRef], list[ApiRun] | RunError]]]] = []
        for project_refs in plan.v2.values():
            for chunk in chunks(project_refs, min(page_size, V2_QUERY_PAGE_MAX)):
                batches.append(split_on_refusal(chunk, v2_batch, "reading runs through the API"))
        for chunk in chunks(plan.v1, min(page_size, V1_QUERY_PAGE)):
            batches.append(split_on_refusal(chunk, v1_batch, "reading runs through the API"))
        for results in await asyncio.gather(*batches):
            for batch, result in results:
                if isinstance(result, RunError):
                    found.update(dict.fromkeys((r.id for r in batch), result))
                else:
                    wanted = {r.id for r in batch}
                    found.update((run.id, run) for run in result if run.id in wanted)
        return found

    async def _query_v2(self, refs: Sequence[RunRef], fields: list[str], page_size: int) -> list[ApiRun]:
        low, high = start_window(refs)
        pager = self.v2().runs.query_v2(
            project_ids=[str(refs[0].project_id)], ids=[r.id for r in refs], min_start_time=low,
            max_start_time=high, selects=fields,  # type: ignore[arg-type]
            page_size=max(1, min(page_size, len(refs), V2_QUERY_PAGE_MAX)))
        return [_api_run(run) async for run in pager]

    def _query_v1(self, run_ids: list[str], fields: list[str]) -> list[ApiRun]:
        """The v1 bulk query, through the client's generic request (not the deprecated list_runs)."""
        body: dict[str, Any] = {"id": run_ids, "select": fields, "limit": V1_QUERY_PAGE}
        runs: list[ApiRun] = []
        while True:
            response = self.client.request_with_retries("POST", "/runs/query",
                                                        request_kwargs={"data": orjson.dumps(body)})
            page = response.json() or {}
            runs.extend(_api_run(run) for run in page.get("runs") or [])
            cursor = (page.get("cursors") or {}).get("next")
            if not cursor or not page.get("runs"):
                return runs
            body["cursor"] = cursor

    async def rules(self, public_url: str | None = None, ids: Sequence[str] | None = None) -> list[RuleInfo]:
        """Automation rules through the v2 list (the generated client's `evaluators.list_v2`; the
        v1 list is deprecated), every page, on the budgeted v2 client; `ids` narrows the list."""
        narrow: dict[str, Any] = {"id": list(ids)} if ids else {}
        pager = self.v2().evaluators.list_v2(page_size=RULES_PAGE, **narrow)
        return [rule_info(rule, public_url) async for rule in pager]

    async def match_runs(self, rule: RuleInfo, *, start: dt.datetime, end: dt.datetime,
                         feedback_since: dt.datetime | None = None, feedback_until: dt.datetime | None = None,
                         filter: str | None = None, with_data: bool = False) -> AsyncIterator[Locator]:
        """Locators of the runs the rule's source and filters match with a start time in
        [start, end], following the cursor (the window is explicit: the query's default is the last
        day). `filter` replaces the rule's own (e.g. with a feedback condition added, which the
        feedback-modified bounds need). `with_data` reads each run's inputs and outputs too, in the
        same pages (a backfill hands them to the job path instead of reading every run twice)."""
        source: dict[str, Any] = ({"project_ids": [rule.project_id]} if rule.project_id
                                  else {"reference_dataset_id": rule.dataset_id})
        optional: dict[str, Any] = {
            "filter": filter if filter is not None else rule.filter, "trace_filter": rule.trace_filter,
            "tree_filter": rule.tree_filter, "min_feedback_modified_at": feedback_since,
            "max_feedback_modified_at": feedback_until}
        query: dict[str, Any] = {**source, **{k: v for k, v in optional.items() if v is not None}}
        if not with_data:
            pager = self.v2().runs.query_v2(min_start_time=start, max_start_time=end, selects=LOCATOR_SELECTS,
                                            page_size=MATCH_PAGE, **query)
            async for run in pager:
                yield _locator(run)
            return
        size, cursor = FIRST_DATA_PAGE, None
        while True:
            after: dict[str, Any] = {"cursor": cursor} if cursor else {}
            page = await self.v2().runs.query_v2(min_start_time=start, max_start_time=end, selects=DATA_SELECTS,
                                                 page_size=size, **after, **query)
            held = 0
            for run in page.items:
                locator = _locator(run)
                held += _data_bytes(locator)
                yield locator
            cursor = page.next_cursor
            if not cursor or not page.items:
                return
            size = next_data_page(held, len(page.items))

    # --- feedback -----------------------------------------------------------------------

    async def feedback(self, run_ids: Sequence[str]) -> dict[str, list[Any] | RunError]:
        """Feedback per run id (each run present, maybe with []); a run whose feedback LangSmith
        refuses to list (e.g. a malformed id) maps to that error alone."""
        def one(chunk: Sequence[str]) -> Awaitable[list[Any]]:
            return self.call(lambda: list(self.client.list_feedback(run_ids=list(chunk))))

        results = await asyncio.gather(*(split_on_refusal(chunk, one, "listing feedback")
                                         for chunk in chunks(list(run_ids), FEEDBACK_CHUNK)))
        found: dict[str, list[Any] | RunError] = {}
        for batch, result in (pair for pairs in results for pair in pairs):
            if isinstance(result, RunError):
                found.update(dict.fromkeys(batch, result))
                continue
            for run_id in batch:
                found.setdefault(run_id, [])
            for item in result:
                bucket = found.get(str(item.run_id))
                if isinstance(bucket, list):
                    bucket.append(item)
        return found

    # --- datasets and examples ------------------------------------------------------------

    async def dataset_id(self, name: str) -> str:
        """The dataset's id, created if missing."""
        try:
            dataset = await self.call(self.client.read_dataset, dataset_name=name)
        except ls_utils.LangSmithNotFoundError:
            try:
                dataset = await self.call(
                    self.client.create_dataset, name,
                    description="Examples from LangSmith automation rules (langsmith-webhook-pipeline).")
            except ls_utils.LangSmithConflictError:  # another worker created it just now
                dataset = await self.call(self.client.read_dataset, dataset_name=name)
        return str(dataset.id)

    async def examples(self, dataset_id: str, ids: Sequence[str]) -> list[tuple[Sequence[str], list[Any] | RunError]]:
        """The stored examples among `ids`, per batch; a batch refused for good is split."""
        def one(chunk: Sequence[str]) -> Awaitable[list[Any]]:
            return self.call(lambda: list(self.client.list_examples(dataset_id=dataset_id, example_ids=chunk)))

        results = await asyncio.gather(*(split_on_refusal(chunk, one, "reading existing examples")
                                         for chunk in chunks(list(ids), EXAMPLES_CHUNK)))
        return [pair for pairs in results for pair in pairs]

    async def create_examples(self, dataset_id: str, examples: Sequence[Mapping[str, Any]]) -> None:
        """`examples` carry reference_outputs (the SDK deprecates `outputs` on creation)."""
        await self.call(self.client.create_examples, dataset_id=dataset_id, examples=[dict(e) for e in examples])

    async def update_examples(self, dataset_id: str, updates: Sequence[Mapping[str, Any]]) -> None:
        """Each update carries the example's whole metadata: LangSmith replaces it on update."""
        await self.call(self.client.update_examples, dataset_id=dataset_id, updates=[dict(u) for u in updates])

    # --- annotation queues ----------------------------------------------------------------

    async def queue_id(self, name: str) -> str | None:
        """The id of the annotation queue named `name` (exact name), or None when there is none.
        The generated client's `annotation_queues.retrieve_annotation_queues` (GET
        /api/v1/annotation-queues?name=...), on the budgeted httpx2 client like the runs query."""
        pager = self.v2().annotation_queues.retrieve_annotation_queues(name=name, limit=ANNOTATION_QUEUE_PAGE)
        async for queue in pager:
            if queue.name == name:
                return str(queue.id)
        return None

    async def add_to_queue(self, queue_id: str, items: Sequence[Mapping[str, Any]]) -> None:
        """Add RUN items to an annotation queue, in one request: the SDK's supported items resource
        (`annotation_queues.items.create`, POST /api/v1/platform/annotation-queues/{id}/items),
        never the deprecated `add_runs_to_annotation_queue`. LangSmith does not de-duplicate
        items: the caller records what it added (workers/actions/annotation_queue.py)."""
        await self.v2().annotation_queues.items.create(queue_id, items=[dict(i) for i in items])  # type: ignore[misc]

    def check_key(self) -> None:
        """Raises the SDK's auth error when LangSmith rejects the key."""
        next(iter(self.client.list_datasets(limit=1)), None)

def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    size = max(1, size)
    return [items[i:i + size] for i in range(0, len(items), size)]
