"""The one door to LangSmith: every call the workers make to it goes through `LangSmith`.

Two SDK clients sit behind it. The hand-written `Client` (requests) reads feedback and
datasets and writes examples; the generated v2 client (`AsyncLangsmith`, on httpx2) runs the v2
runs query. Both send through workers/langsmith/transport.py, so both draw from the shared rate
budget and neither retries or sleeps on its own. Both are built in workers/langsmith/clients.py,
from one config (endpoint, key, workspace, proxy, CA bundle). Nothing here calls a deprecated SDK method:
`read_run`/`list_runs` (removed after 2027-01-31) are replaced by bulk queries.

`/info` is read here, never guessed: the SDK's `Client.info` turns one failed read into an empty
`LangSmithInfo` for the client's life (client.py, `except BaseException`), and from that empty
answer the SDK and we would decide "v1 only" and the legacy `/examples/bulk` path. `refresh_info`
reads it through the budgeted session and hands the answer to a new SDK client (`info=`), so the
SDK never reads it itself; until one read succeeds, nothing that depends on it runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import orjson
import redis
from langsmith import AsyncLangsmith, Client, NotFoundError
from langsmith import utils as ls_utils
from langsmith.schemas import LangSmithInfo
from langsmith.types.run_select_field import RunSelectField
from packaging.version import InvalidVersion, Version

from lswh_core import times
from lswh_core.settings import Settings
from workers.errors import InfoUnknown, RunError, classify
from workers.langsmith.clients import ClientConfig, build_client, build_v2
from workers.langsmith.transport import Budget, BudgetedAdapter, Recorder, RouteOf

T = TypeVar("T")
R = TypeVar("R")

V1_QUERY_PAGE = 100  # POST /runs/query answers 422 above 100 (SDK list_runs pages at 100)
V2_QUERY_PAGE_MAX = 1000  # query_v2's page_size bounds (SDK: resources/runs/runs.py)
FEEDBACK_CHUNK = 100  # run ids per GET /feedback (URL length; the API pages at 100)
EXAMPLES_CHUNK = 100  # ids per GET /examples (URL length)
ANNOTATION_QUEUE_PAGE = 100
# The v2 query filters on start_time; LangSmith stores microseconds, deliveries may round.
WINDOW_SLACK = dt.timedelta(seconds=1)
# SDK client.py `Client.annotation_queues`: "The items endpoints landed in backend 0.16.14".
QUEUE_ITEMS_VERSION = "0.16.14"
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
# A backfill reads inputs and outputs while listing and hands them on (workers/flow/synthetic.py).
DATA_SELECTS: list[RunSelectField] = [*LOCATOR_SELECTS, "INPUTS", "OUTPUTS"]


class QueryBackend(enum.Enum):
    """Which run-query backends a LangSmith server has, from `/info`'s instance flags, decided
    exactly as the SDK does (langsmith/_internal/_v2_migration_utils.py `get_query_backend`):
    `ch_query_enabled` defaults on when absent, `sdb_query_enabled` off, and nothing else counts.
    No version gate: the SDK applies none to this decision (it only warns below 0.16.0 when a v2
    resource is used), and a SmithDB-only server that reports an empty or older version has no v1
    runs query to fall back to. tests/test_query_backend.py runs both over one table."""

    V1_ONLY = "clickhouse_only"
    V2_ONLY = "smithdb_only"
    BOTH = "dual"

    @classmethod
    def of(cls, flags: Mapping[str, Any] | None) -> QueryBackend:
        flags = flags or {}
        v1 = bool(flags.get("ch_query_enabled", True))
        v2 = bool(flags.get("sdb_query_enabled", False))
        if v2 and not v1:
            return cls.V2_ONLY
        return cls.BOTH if v2 else cls.V1_ONLY


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
    # What the rule matches (SDK types/rule.py: THREAD_ID, TRAJECTORY_ID; None: runs), upper case
    # whatever case the server sends.
    group_by: str | None = None


def _field_getter(model: Any) -> Callable[[str], Any]:
    """Reads a field of a generated-client model and of its dict form alike (None when absent)."""
    if isinstance(model, Mapping):
        return model.get
    return lambda name: getattr(model, name, None)


def rule_info(rule: Any, public_url: str | None) -> RuleInfo:
    """A generated-client `Rule` (or its dict) reduced to RuleInfo."""
    get = _field_getter(rule)
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
        points_here=bool(public_url) and any(points_at(url, str(public_url)) for url in urls),
        group_by=(_text(get("group_by")) or "").upper() or None)


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
    get = _field_getter(run)
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
    """A run's time with an offset (naive = UTC: lswh_core/times.py), None when it is none."""
    try:
        return times.parse(value)
    except ValueError:
        return None


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
    get = _field_getter(run)
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
        if error.transient or not error.splittable or len(items) == 1:
            return [(items, error)]
    middle = len(items) // 2
    first, second = await asyncio.gather(split_on_refusal(items[:middle], call, doing),
                                         split_on_refusal(items[middle:], call, doing))
    return first + second


def queue_items_missing(version: str | None) -> str:
    """Why a 404 from the annotation-queue items endpoint fails the run, from the version `/info`
    reported: a server older than 0.16.14 has no such endpoint (a misleading "not found" otherwise)."""
    try:
        known = Version(str(version)) if version else None
    except InvalidVersion:
        known = None
    if known is not None and known < Version(QUEUE_ITEMS_VERSION):
        return (f"LangSmith {version} has no annotation-queue items endpoint: it landed in backend "
                f"{QUEUE_ITEMS_VERSION}; upgrade the server, or remove the annotation_queue action")
    if known is not None:
        return "annotation queue not found in LangSmith (its items endpoint answered 404)"
    reported = f"reports version {version!r}" if version else "reports no version"
    return (f"the annotation queue's items endpoint answered 404: the queue is gone, or the server is older than "
            f"{QUEUE_ITEMS_VERSION}, the backend version the items endpoints landed in (this one {reported})")


# Blocking SDK calls at once: a slice's concurrent feedback, example reads and writes.
SDK_THREADS = 8


def sdk_pool(threads: int = SDK_THREADS) -> Callable[..., Awaitable[Any]]:
    """The one thread hop of a job: a blocking SDK (`requests`) call, awaited from the job's loop,
    runs on this pool so the loop goes on with the delivery's other requests meanwhile."""
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lswh-sdk")

    async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args, **kwargs))

    return call


class LangSmith:
    """Runs, feedback, datasets and examples, through the shared budget.

    Blocking SDK calls hop to the SDK thread pool (`call`, made by `sdk_pool`): the only thread
    hop in a job. The v2 client lives on the worker's one I/O loop, where every coroutine here runs.
    """

    def __init__(self, *, call: Callable[..., Awaitable[Any]], budget: Budget | None, route_of: RouteOf,
                 recorder: Recorder | None = None, config: ClientConfig) -> None:
        self.call = call
        self.budget = budget
        self.route_of = route_of
        self.recorder = recorder
        self.config = config
        self._info: LangSmithInfo | None = None
        self._info_read_at: float | None = None  # time.monotonic() of the last good read
        self._info_lock = threading.Lock()
        self.client = self._build_client(None)
        self._v2: AsyncLangsmith | None = None

    def _build_client(self, info: LangSmithInfo | None) -> Client:
        """The SDK client, given `/info` once it has been read (None: not yet; nothing that reads
        `client.info` runs before then, see `require_info`)."""
        return build_client(self.config, BudgetedAdapter(self.budget, self.route_of, self.recorder), info=info)

    @classmethod
    def for_settings(cls, settings: Settings, connection: redis.Redis, *,
                     call: Callable[..., Awaitable[Any]] | None = None, recorder: Recorder | None = None) -> LangSmith:
        from workers.langsmith.budget import RateBudget, route_of

        config = ClientConfig.of(settings)
        budget = RateBudget(connection, config.api_key or "", settings.langsmith_rate_limits)
        return cls(call=call or sdk_pool(), budget=budget, route_of=route_of, recorder=recorder, config=config)

    @property
    def api_url(self) -> str:
        return str(self.client.api_url)

    # --- /info --------------------------------------------------------------------------

    def read_info(self) -> LangSmithInfo:
        """`GET /info` through the budgeted session (a 5xx is sent again twice, workers/langsmith/transport.py);
        raises when it cannot be read: never an empty answer in its place."""
        response = self.client.request_with_retries("GET", "/info", headers={"Accept": "application/json"})
        ls_utils.raise_for_status_with_text(response)
        body = response.json()
        if not isinstance(body, Mapping):
            raise ValueError("LangSmith /info answered something other than a JSON object")
        return LangSmithInfo(**body)

    def refresh_info(self) -> LangSmithInfo:
        """Read `/info` now; on an answer that differs from the last, the SDK client is rebuilt with it
        (the SDK reads `client.info` for its examples path). Raises InfoUnknown when it cannot be read;
        the last good answer, if any, stays."""
        try:
            info = self.read_info()
        except Exception as exc:
            raise InfoUnknown(exc) from exc
        with self._info_lock:
            if info != self._info:
                self.client = self._build_client(info)
                self._info = info
            self._info_read_at = time.monotonic()
        return info

    def known_info(self) -> LangSmithInfo | None:
        """The last `/info` read, or None when none has succeeded yet."""
        return self._info

    def info_age(self) -> float | None:
        """Seconds since the last good `/info` read, None before the first."""
        return None if self._info_read_at is None else time.monotonic() - self._info_read_at

    def require_info(self) -> LangSmithInfo:
        """The known `/info`, read now if none is; InfoUnknown (transient) when it cannot be."""
        return self.known_info() or self.refresh_info()

    def backend(self) -> QueryBackend:
        return QueryBackend.of(self.require_info().instance_flags)

    def v2(self) -> AsyncLangsmith:
        """Made on first use, on the I/O loop (its httpx client is bound to that loop)."""
        if self._v2 is None:
            self._v2 = build_v2(self.config, self.budget, self.route_of, self.recorder)
        return self._v2

    async def warm_up(self) -> None:
        """Build the v2 client and load the resources the job path uses, on the loop, before the
        first job: the generated client imports them on first access (~0.2 s, bench/workers.py),
        which would otherwise be paid by the first delivery. No request is sent."""
        client = self.v2()
        for resource in ("runs", "evaluators", "annotation_queues"):
            getattr(client, resource)  # cached properties: the import happens on first access
        # The v2 client's first connection makes an anyio.Event (httpcore2's pool), which imports
        # anyio's asyncio backend: ~20 ms of the first delivery's rule read (bench/workers.py).
        anyio.Event()

    # --- runs ---------------------------------------------------------------------------

    async def read_runs(self, refs: Sequence[RunRef], *, inputs: bool, outputs: bool, page_size: int
                        ) -> dict[str, ApiRun | RunError]:
        """The runs LangSmith returns, by id; a run it refuses maps to its error; a run it does
        not return is absent. Pages are at most `page_size` runs (a slice)."""
        try:
            backend = await self.call(self.backend)
        except InfoUnknown as exc:  # a guessed backend would send reads where the server has none
            return dict.fromkeys((r.id for r in refs), RunError(str(exc), transient=True))
        plan = plan_reads(refs, backend)
        found: dict[str, ApiRun | RunError] = {}
        for ref in plan.unlocatable:
            found[ref.id] = RunError("cannot locate run: it has no session_id or start_time, which the v2 runs "
                                     "query needs, and this LangSmith has no v1 runs query", transient=False)
        fields = selects(inputs=inputs, outputs=outputs)

        async def v2_batch(batch: Sequence[RunRef]) -> list[ApiRun]:
            return await self._query_v2(batch, fields, page_size)

        async def v1_batch(batch: Sequence[RunRef]) -> list[ApiRun]:
            runs: list[ApiRun] = await self.call(self._query_v1, [r.id for r in batch], [f.lower() for f in fields])
            return runs

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
            max_start_time=high, selects=fields,  # type: ignore[arg-type]  # selects() gives SDK field names as str
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
        # RFC 3339 with an offset: the generated client sends a naive datetime without one.
        since, until = (times.aware(t) if t is not None else None for t in (feedback_since, feedback_until))
        optional: dict[str, Any] = {
            "filter": filter if filter is not None else rule.filter, "trace_filter": rule.trace_filter,
            "tree_filter": rule.tree_filter, "min_feedback_modified_at": since, "max_feedback_modified_at": until}
        query: dict[str, Any] = {**source, **{k: v for k, v in optional.items() if v is not None}}
        start, end = times.aware(start), times.aware(end)
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
        """`examples` carry reference_outputs (the SDK deprecates `outputs` on creation). The SDK
        picks its path from `client.info` (multipart when `dataset_examples_multipart_enabled`)."""
        await self.call(self.require_info)
        await self.call(self.client.create_examples, dataset_id=dataset_id, examples=[dict(e) for e in examples])

    async def update_examples(self, dataset_id: str, updates: Sequence[Mapping[str, Any]]) -> None:
        """Each update carries the example's whole metadata: LangSmith replaces it on update."""
        await self.call(self.require_info)
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
        try:
            await self.v2().annotation_queues.items.create(queue_id, items=[dict(i) for i in items])  # type: ignore[misc]  # SDK's Item TypedDict
        except NotFoundError as exc:
            info = self.known_info()
            raise RunError(queue_items_missing(info.version if info else None), transient=False,
                           splittable=False) from exc

    # --- threads ------------------------------------------------------------------------

    async def thread_turns(self, project_id: str, thread_ids: Sequence[str], *, start: dt.datetime,
                           end: dt.datetime) -> list[Turn]:
        """The root runs (turns) of these threads in one project, every page: the v2 runs query with
        the docs' thread filter (thread_filter_for), on the budgeted v2 client like any runs read."""
        pager = self.v2().runs.query_v2(
            project_ids=[project_id], is_root=True, filter=thread_filter_for(thread_ids), min_start_time=start,
            max_start_time=end, selects=TURN_SELECTS, page_size=THREAD_TURNS_PAGE)
        return [_turn(run) async for run in pager]

    def check_key(self) -> None:
        """Raises the SDK's auth error when LangSmith rejects the key."""
        next(iter(self.client.list_datasets(limit=1)), None)

# Where LangSmith finds a thread's id: any of these metadata keys (docs "Configure threads",
# https://docs.langchain.com/langsmith/threads: "The key name should be one of: session_id,
# thread_id, conversation_id"), in the order a run's own metadata is read here.
THREAD_METADATA_KEYS = ("thread_id", "session_id", "conversation_id")
# What a thread's turn needs (the v2 `Run` model's field names, types/run_select_field.py).
TURN_SELECTS: list[RunSelectField] = ["ID", "TRACE_ID", "NAME", "START_TIME", "INPUTS", "OUTPUTS", "METADATA",
                                      "THREAD_ID"]
THREAD_TURNS_PAGE = 100  # turns with inputs and outputs: pages stay small, like API_PAGE in workers/flow/slices.py


@dataclass(frozen=True)
class Turn:
    """One root run of a thread, as read back."""

    id: str
    trace_id: str | None
    name: str | None
    start_time: str | None
    thread_id: str | None
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None


def thread_filter_for(thread_ids: Sequence[str]) -> str:
    """Root runs of any of these threads: the filter the docs give for "all root runs in a
    conversational thread" (docs "Query traces", export-traces: `and(in(metadata_key,
    ["session_id","conversation_id","thread_id"]), eq(metadata_value, "<id>"))`), with `in` over
    several thread ids so one request reads many threads."""
    keys = ", ".join(orjson.dumps(key).decode() for key in THREAD_METADATA_KEYS)
    values = ", ".join(orjson.dumps(str(thread_id)).decode() for thread_id in thread_ids)
    return f"and(in(metadata_key, [{keys}]), in(metadata_value, [{values}]))"


def thread_id_in(metadata: Any) -> str | None:
    if not isinstance(metadata, Mapping):
        return None
    for key in THREAD_METADATA_KEYS:
        value = metadata.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    return None


def _turn(run: Any) -> Turn:
    get = _field_getter(run)
    start = get("start_time")
    start_text = start.isoformat() if isinstance(start, dt.datetime) else _text(start)
    return Turn(id=str(get("id")), trace_id=_text(get("trace_id")), name=_text(get("name")), start_time=start_text,
                thread_id=_text(get("thread_id")) or thread_id_in(get("metadata")),
                inputs=_dict_or_none(get("inputs")), outputs=_dict_or_none(get("outputs")))


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    size = max(1, size)
    return [items[i:i + size] for i in range(0, len(items), size)]
