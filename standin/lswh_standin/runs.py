"""Run reads: v1 `GET /runs/{id}` and `POST /runs/query`, v2 `POST /api/v2/runs/query` and
`GET /api/v2/runs/{id}`.

v1, as `Client.read_run` / `Client.list_runs` call it (client.py): the query body holds `session`, `id`,
`select`, `limit`, `cursor`, `filter`, `trace_filter`, `tree_filter`, `is_root`, `run_type`,
`start_time`, `error`, `trace`; the answer is `{"runs": [...], "cursors": {"next": ...}}`. A `limit`
over 100 is refused with 422 (LangSmith's limit; `Client.list_runs` never sends more for the same reason).

v2, as the SDK's generated client sends it (resources/runs/runs.py `query_v2` / `retrieve_v2`,
types/run_query_v2_params.py) and reads it back (pagination.py `AsyncItemsCursorPostPagination`:
`{"items": [...], "next_cursor": ...}`, the cursor posted back in the body). The rules come from the
`query_v2` docstring: `project_ids` or `reference_dataset_id`, exactly one; `min_start_time` defaults to
one day ago and `max_start_time` to now; `selects` names fields in upper case and without it only `id`
comes back, other fields are left out; `page_size` 1-1000, default 100; the feedback-modified bounds
apply to the feedback conditions of the filters and need at least one. Where a field is not in
`selects` it is absent from the item, not null.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any, get_args

from langsmith.types.run_select_field import RunSelectField
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.filters import FilterError, Matcher, Subject, compile_filter, has_feedback_condition, parse
from lswh_standin.state import (
    ApiError,
    BadRequest,
    State,
    Unprocessable,
    json_body,
    now,
    parse_time,
    rfc3339_or_none,
    uuid_or_none,
)

# The field names the SDK's generated client may send (types/run_select_field.py).
RUN_SELECT_FIELDS = frozenset(get_args(RunSelectField))
V1_LIMIT_MAX = 100
V2_PAGE_DEFAULT, V2_PAGE_MAX = 100, 1000


def _not_on_this_server() -> ApiError:
    return ApiError(404, "Not Found")


# --- shared -------------------------------------------------------------------------------------


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_cursor(cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise Unprocessable("cursor is not one this server gave out") from None
    if not isinstance(offset, int) or offset < 0:
        raise Unprocessable("cursor is not one this server gave out")
    return offset


def _filters(body: dict[str, Any]) -> dict[str, Any]:
    """The three filter strings, parsed; bad syntax is a 400 naming the filter."""
    parsed = {}
    for name in ("filter", "trace_filter", "tree_filter"):
        text = body.get(name)
        if text is None:
            continue
        if not isinstance(text, str):
            raise Unprocessable(f"{name} must be a string")
        try:
            parsed[name] = (compile_filter(text), parse(text) if text.strip() else None)
        except FilterError as e:
            raise BadRequest(f"invalid {name}: {e}") from None
    return parsed


class _Matching:
    """Applies filter, trace_filter and tree_filter, with feedback limited to the modified bounds."""

    def __init__(self, state: State, filters: dict[str, Any], fb_min: datetime | None, fb_max: datetime | None):
        self.state = state
        self.filters = {name: matcher for name, (matcher, _) in filters.items() if matcher is not None}
        self.fb_min, self.fb_max = fb_min, fb_max
        self.traces: dict[str, list[dict[str, Any]]] = {}
        if "tree_filter" in self.filters:
            for run in state.runs.values():
                self.traces.setdefault(str(run.get("trace_id")), []).append(run)
        self.feedback_by_run: dict[str, list[dict[str, Any]]] = {}
        for item in state.feedback.values():
            modified = parse_time(item.get("modified_at"))
            if fb_min is not None and (modified is None or modified < fb_min):
                continue
            if fb_max is not None and (modified is None or modified >= fb_max):
                continue
            self.feedback_by_run.setdefault(str(item.get("run_id")), []).append(item)

    def subject(self, run: dict[str, Any]) -> Subject:
        return Subject(run, self.feedback_by_run.get(run["id"], []))

    def __call__(self, run: dict[str, Any]) -> bool:
        match: Matcher | None = self.filters.get("filter")
        if match is not None and not match(self.subject(run)):
            return False
        match = self.filters.get("trace_filter")
        if match is not None:
            root = self.state.runs.get(str(run.get("trace_id")))
            if root is None or not match(self.subject(root)):
                return False
        match = self.filters.get("tree_filter")
        if match is not None:
            tree = self.traces.get(str(run.get("trace_id")), [])
            if not any(match(self.subject(r)) for r in tree):
                return False
        return True


def _start(run: dict[str, Any]) -> datetime:
    return parse_time(run.get("start_time")) or datetime.min.replace(tzinfo=now().tzinfo)


def _newest_first(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(runs, key=lambda r: (_start(r), r["id"]), reverse=True)


# --- v1 -----------------------------------------------------------------------------------------


async def read_run(request: Request, state: State) -> Response:
    if not state.profile.v1_runs:
        raise _not_on_this_server()
    run = state.runs.get(uuid_or_none(request.path_params["run_id"]) or "")
    if run is None:
        return JSONResponse({"detail": "Run not found"}, status_code=404)
    return JSONResponse(run)


def _uuid_list(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    ids = [uuid_or_none(v) for v in values]
    if any(i is None for i in ids):
        raise Unprocessable(f"{name} must hold UUIDs")
    return [str(i) for i in ids]


async def query_runs_v1(request: Request, state: State) -> Response:
    if not state.profile.v1_runs:
        raise _not_on_this_server()
    body = await json_body(request)
    if not isinstance(body, dict):
        raise Unprocessable("body must be an object")
    limit = body.get("limit", V1_LIMIT_MAX)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= V1_LIMIT_MAX:
        raise Unprocessable(f"limit must be between 1 and {V1_LIMIT_MAX}")
    sessions, ids, traces = _uuid_list(body, "session"), _uuid_list(body, "id"), _uuid_list(body, "trace")
    since = parse_time(body.get("start_time")) if body.get("start_time") is not None else None
    matching = _Matching(state, _filters(body), None, None)
    found = [
        r
        for r in state.runs.values()
        if (sessions is None or r.get("session_id") in sessions)
        and (ids is None or r["id"] in ids)
        and (traces is None or str(r.get("trace_id")) in traces)
        and (since is None or _start(r) >= since)
        and (body.get("run_type") is None or r.get("run_type") == body["run_type"])
        and (body.get("is_root") is None or (not r.get("parent_run_id")) == bool(body["is_root"]))
        and (body.get("error") is None or bool(r.get("error")) == bool(body["error"]))
        and matching(r)
    ]
    found = _newest_first(found)
    offset = _decode_cursor(body.get("cursor"))
    chunk = found[offset : offset + limit]
    select = body.get("select")
    if isinstance(select, list):
        chunk = [{"id": r["id"], **{k: r.get(k) for k in select if isinstance(k, str)}} for r in chunk]
    following = _encode_cursor(offset + limit) if offset + limit < len(found) else None
    return JSONResponse({"runs": chunk, "cursors": {"next": following}})


# --- v2 -----------------------------------------------------------------------------------------


def _preview(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)[:150]


def _feedback_by_run(state: State) -> dict[str, list[dict[str, Any]]]:
    index: dict[str, list[dict[str, Any]]] = {}
    for item in state.feedback.values():
        index.setdefault(str(item.get("run_id")), []).append(item)
    return index


def _feedback_stats(feedback: list[dict[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for item in feedback:
        entry = stats.setdefault(item["key"], {"n": 0, "scores": []})
        entry["n"] += 1
        if isinstance(item.get("score"), int | float):
            entry["scores"].append(float(item["score"]))
    return {
        key: {"n": e["n"], "avg": sum(e["scores"]) / len(e["scores"]) if e["scores"] else None,
              "min": min(e["scores"], default=None), "max": max(e["scores"], default=None)}
        for key, e in stats.items()
    }


def v2_value(feedback: dict[str, list[dict[str, Any]]], run: dict[str, Any], field: str) -> Any:
    """One `selects` field of a stored run, named and shaped as the v2 `Run` model has it
    (`feedback`: every feedback item by run id)."""
    metadata = (run.get("extra") or {}).get("metadata") or {}
    start, end = parse_time(run.get("start_time")), parse_time(run.get("end_time"))
    special: dict[str, Any] = {
        "PROJECT_ID": lambda: run.get("session_id"),
        "STATUS": lambda: str(run.get("status") or "pending").upper(),
        "METADATA": lambda: metadata,
        "IS_ROOT": lambda: not run.get("parent_run_id"),
        "LATENCY_SECONDS": lambda: (end - start).total_seconds() if start and end else None,
        # Any of the three keys the docs name ("Configure threads": session_id, thread_id, conversation_id).
        "THREAD_ID": lambda: metadata.get("thread_id") or metadata.get("session_id") or metadata.get("conversation_id"),
        "INPUTS_PREVIEW": lambda: _preview(run.get("inputs")),
        "OUTPUTS_PREVIEW": lambda: _preview(run.get("outputs")),
        "ERROR_PREVIEW": lambda: (run.get("error") or None) and str(run["error"])[:150],
        "FEEDBACK_STATS": lambda: _feedback_stats(feedback.get(run["id"], [])) or run.get("feedback_stats"),
        "TAGS": lambda: run.get("tags") or [],
    }
    getter = special.get(field)
    return getter() if getter is not None else run.get(field.lower())


def _selects(value: Any) -> list[str]:
    if value is None:
        return ["ID"]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unprocessable("selects must be a list of field names")
    unknown = [v for v in value if v not in RUN_SELECT_FIELDS]
    if unknown:
        raise Unprocessable(f"unknown selects: {', '.join(unknown)} (names are upper case, e.g. INPUTS)")
    return ["ID", *value]


def _v2_items(state: State, runs: list[dict[str, Any]], selects: list[str]) -> list[dict[str, Any]]:
    feedback = _feedback_by_run(state) if "FEEDBACK_STATS" in selects else {}
    return [{field.lower(): v2_value(feedback, run, field) for field in dict.fromkeys(selects)} for run in runs]


def _time_param(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    # Strict, as the schema's `format: date-time` (RFC 3339) says: a time without an offset is refused.
    moment = rfc3339_or_none(value)
    if moment is None:
        raise Unprocessable(f"{name} must be an RFC 3339 date-time with a timezone, e.g. 2024-04-05T01:28:54Z")
    return moment


def _page_size(value: Any) -> int:
    if value is None:
        return V2_PAGE_DEFAULT
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= V2_PAGE_MAX:
        raise Unprocessable(f"page_size must be between 1 and {V2_PAGE_MAX}")
    return value


def _dataset_runs(state: State, dataset_id: str) -> set[str]:
    examples = {e["id"] for e in state.examples.values() if e["dataset_id"] == dataset_id}
    return {r["id"] for r in state.runs.values() if uuid_or_none(r.get("reference_example_id")) in examples}


async def query_runs_v2(request: Request, state: State) -> Response:
    if not state.profile.v2_api:
        raise _not_on_this_server()
    body = await json_body(request)
    if not isinstance(body, dict):
        raise Unprocessable("body must be an object")
    if body.get("ai_search") is not None or body.get("sem_filter") is not None:
        raise ApiError(501, "AI search is not modelled by the stand-in")
    projects, dataset = _uuid_list(body, "project_ids"), body.get("reference_dataset_id")
    if bool(projects) == (dataset is not None):
        raise Unprocessable("set exactly one of project_ids and reference_dataset_id")
    dataset_runs = _dataset_runs(state, str(uuid_or_none(dataset))) if dataset is not None else None
    page_size, selects = _page_size(body.get("page_size")), _selects(body.get("selects"))
    latest = _time_param(body, "max_start_time") or now()
    # A dataset query without a lower bound starts at its sessions' creation: no bound here.
    default_min = None if dataset is not None else now() - timedelta(days=1)
    earliest = _time_param(body, "min_start_time") or default_min
    fb_min, fb_max = _time_param(body, "min_feedback_modified_at"), _time_param(body, "max_feedback_modified_at")
    filters = _filters(body)
    if (fb_min or fb_max) and not any(node is not None and has_feedback_condition(node)
                                      for _, node in filters.values()):
        raise Unprocessable("min/max_feedback_modified_at need a feedback condition in filter, trace_filter "
                            "or tree_filter (e.g. eq(feedback_key, \"correctness\"))")
    ids, examples = _uuid_list(body, "ids"), _uuid_list(body, "reference_examples")
    trace = uuid_or_none(body["trace_id"]) if body.get("trace_id") is not None else None
    matching = _Matching(state, filters, fb_min, fb_max)
    found = [
        r
        for r in state.runs.values()
        if (projects is None or r.get("session_id") in projects)
        and (dataset_runs is None or r["id"] in dataset_runs)
        and (earliest is None or _start(r) >= earliest)
        and _start(r) <= latest
        and (ids is None or r["id"] in ids)
        and (examples is None or uuid_or_none(r.get("reference_example_id")) in examples)
        and (trace is None or str(r.get("trace_id")) == trace)
        and (body.get("is_root") is None or (not r.get("parent_run_id")) == bool(body["is_root"]))
        and (body.get("run_type") is None or r.get("run_type") == body["run_type"])
        and (body.get("has_error") is None or bool(r.get("error")) == bool(body["has_error"]))
        and matching(r)
    ]
    found = _newest_first(found)
    offset = _decode_cursor(body.get("cursor"))
    items = _v2_items(state, found[offset : offset + page_size], selects)
    following = _encode_cursor(offset + page_size) if offset + page_size < len(found) else None
    return JSONResponse({"items": items, "next_cursor": following})


async def retrieve_run_v2(request: Request, state: State) -> Response:
    if not state.profile.v2_api:
        raise _not_on_this_server()
    params = request.query_params
    run_id = uuid_or_none(request.path_params["run_id"])
    project = uuid_or_none(params.get("project_id")) if params.get("project_id") else None
    if run_id is None:
        raise Unprocessable("run_id must be a UUID")
    if project is None:
        raise Unprocessable("project_id (a UUID) is required")
    if params.get("start_time") is not None and parse_time(params["start_time"]) is None:
        raise Unprocessable("start_time must be an RFC 3339 date-time")
    run = state.runs.get(run_id)
    if run is None or run.get("session_id") != project:
        return JSONResponse({"detail": "Run not found"}, status_code=404)
    return JSONResponse(_v2_items(state, [run], _selects(params.getlist("selects") or None))[0])
