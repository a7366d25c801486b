"""The admin API under `/_admin` (no key, no limits, not counted): preload and read back state,
inject faults and latency, switch limits and `/info` profiles, arm races."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.datasets import dataset_out
from lswh_standin.feedback import normalize_feedback
from lswh_standin.limits import CLOUD_LIMITS, Limit
from lswh_standin.profiles import PROFILES
from lswh_standin.rules import normalize_rule
from lswh_standin.state import SESSION_ID, BadRequest, Fault, Race, State, iso, json_body, uuid_or_none
from lswh_standin.tenants import tenants_of

FIXTURE_PATH = Path(__file__).parent / "fixtures" / "langsmith_docs_payload.json"
FIXTURE_INPUTS = {"query": "How do I turn traced runs into dataset examples in LangSmith?"}
FIXTURE_OUTPUTS = {
    "output": "Add an automation rule on your tracing project that adds matching runs to a dataset."
}


def _items(body: Any, name: str) -> list[dict[str, Any]]:
    items = body.get(name) if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest(f"body must be a list of {name} (or {{{name!r}: [...]}})")
    return items


def normalize_run(spec: dict[str, Any], existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stored run from an admin spec; on an existing id the spec's fields win and `modified_at`
    moves to now unless the spec gives one."""
    run = {**copy.deepcopy(existing or {}), **copy.deepcopy(spec)}
    run_id = uuid_or_none(run.get("id")) or str(uuid.uuid4())
    start = run.get("start_time") or iso()
    run.update(id=run_id, start_time=start, modified_at=spec.get("modified_at") or iso())
    run.setdefault("name", "run")
    run.setdefault("run_type", "chain")
    run["trace_id"] = uuid_or_none(run.get("trace_id")) or run_id
    stamp = datetime.fromisoformat(start.replace("Z", "+00:00")).strftime("%Y%m%dT%H%M%S%fZ")
    run.setdefault("dotted_order", f"{stamp}{run_id}")
    run.setdefault("session_id", SESSION_ID)
    run.setdefault("status", "success")
    run.setdefault("inputs", {})
    run.setdefault("outputs", None)
    run.setdefault("error", None)
    run.setdefault("end_time", None)
    run.setdefault("tags", [])
    run.setdefault("extra", {"metadata": {}})
    run.setdefault("parent_run_ids", [])
    run.setdefault("parent_run_id", None)
    return run


def fixture_run() -> dict[str, Any]:
    """The run of the docs fixture payload, with the inputs and outputs LangSmith would store."""
    run = json.loads(FIXTURE_PATH.read_text())["runs"][0]
    return normalize_run({**run, "inputs": FIXTURE_INPUTS, "outputs": FIXTURE_OUTPUTS})


async def runs(request: Request, state: State) -> Response:
    stored = []
    for spec in _items(await json_body(request), "runs"):
        run = normalize_run(spec, state.runs.get(uuid_or_none(spec.get("id")) or ""))
        state.runs[run["id"]] = run
        stored.append(run["id"])
    return JSONResponse({"stored": len(stored), "ids": stored})


async def read_runs(request: Request, state: State) -> Response:
    return JSONResponse(list(state.runs.values()))


async def feedback(request: Request, state: State) -> Response:
    stored = []
    for spec in _items(await json_body(request), "feedback"):
        item = normalize_feedback(spec, state, state.feedback.get(uuid_or_none(spec.get("id")) or ""))
        state.feedback[item["id"]] = item
        stored.append(item["id"])
    return JSONResponse({"stored": len(stored), "ids": stored})


async def read_feedback(request: Request, state: State) -> Response:
    return JSONResponse(list(state.feedback.values()))


async def examples(request: Request, state: State) -> Response:
    name = request.query_params.get("dataset")
    ids = {d["id"] for d in state.datasets.values() if name is None or d["name"] == name}
    return JSONResponse([e for e in state.examples.values() if e["dataset_id"] in ids])


async def datasets(request: Request, state: State) -> Response:
    return JSONResponse([dataset_out(state, d) for d in state.datasets.values()])


async def stats(request: Request, state: State) -> Response:
    return JSONResponse(
        {
            "total": sum(state.stats.values()),
            "requests": dict(state.stats),
            "rate_limited": dict(state.rate_limited),
            "rate_limited_total": sum(state.rate_limited.values()),
        }
    )


async def reset(request: Request, state: State) -> Response:
    body = await json_body(request) if await request.body() else {}
    state.reset(everything=bool(isinstance(body, dict) and body.get("all")))
    tenants_of(request).reset()
    return JSONResponse({"reset": True})


async def latency(request: Request, state: State) -> Response:
    body = await json_body(request)
    try:
        state.latency_ms = max(0, int(body["ms"]))
    except (TypeError, KeyError, ValueError):
        raise BadRequest('body must be {"ms": <int>}') from None
    return JSONResponse({"ms": state.latency_ms})


def _limits_out(state: State) -> dict[str, Any]:
    table = {name: {"count": lim.count, "seconds": lim.seconds} for name, lim in state.limits.items()}
    return {"enabled": state.limits_enabled, "limits": table}


async def read_limits(request: Request, state: State) -> Response:
    return JSONResponse(_limits_out(state))


async def set_limits(request: Request, state: State) -> Response:
    """`{"enabled": bool}` lifts or restores the limits; `{"limits": {name: {"count", "seconds"}}}`
    changes rows (a test that must see a window end sets a short one); `{"cloud": true}` restores
    the docs' table. Windows start afresh either way."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    if body.get("cloud"):
        state.limits = dict(CLOUD_LIMITS)
    for name, row in (body.get("limits") or {}).items():
        if name not in CLOUD_LIMITS:
            raise BadRequest(f"unknown limit {name!r}; one of: {', '.join(CLOUD_LIMITS)}")
        try:
            state.limits[name] = Limit(int(row["count"]), float(row["seconds"]))
        except (TypeError, KeyError, ValueError):
            raise BadRequest('a limit is {"count": <int>, "seconds": <number>}') from None
    if "enabled" in body:
        state.limits_enabled = bool(body["enabled"])
    state.windows.clear()
    return JSONResponse(_limits_out(state))


async def read_info(request: Request, state: State) -> Response:
    return JSONResponse({"profile": state.profile.name, "profiles": list(PROFILES), "fail": state.info_failures})


async def set_info(request: Request, state: State) -> Response:
    """`{"profile": name}` switches what `/info` reports; `{"fail": N}` makes the next N `GET /info`
    answer 503 (either or both)."""
    body = await json_body(request)
    usage = f'body must be {{"profile": one of {", ".join(PROFILES)}}} and/or {{"fail": <int >= 0>}}'
    if not isinstance(body, dict) or not ({"profile", "fail"} & set(body)):
        raise BadRequest(usage)
    name, fail = body.get("profile"), body.get("fail")
    if "profile" in body and name not in PROFILES:
        raise BadRequest(usage)
    if "fail" in body and (not isinstance(fail, int) or isinstance(fail, bool) or fail < 0):
        raise BadRequest(usage)
    if "profile" in body:
        state.profile = PROFILES[str(name)]
    if "fail" in body:
        state.info_failures = int(str(fail))
    return JSONResponse({"profile": state.profile.name, "fail": state.info_failures})


def _parse_fault(spec: Any) -> Fault:
    if not isinstance(spec, dict) or not isinstance(spec.get("route"), str):
        raise BadRequest('a fault needs "route": "<METHOD> <path-prefix>"')
    method, _, prefix = spec["route"].strip().partition(" ")
    prefix = prefix.strip() or "/"
    try:
        fault = Fault(
            method=method.upper(),
            prefix=prefix,
            times=int(spec.get("times", 1)),
            status=int(spec["status"]) if spec.get("status") is not None else None,
            retry_after=int(spec["retry_after"]) if spec.get("retry_after") is not None else None,
            stall_seconds=float(spec.get("stall_seconds") or 0),
        )
    except (TypeError, ValueError):
        raise BadRequest("times, status, retry_after and stall_seconds must be numbers") from None
    if fault.status is None and fault.stall_seconds <= 0:
        raise BadRequest("a fault needs a status or stall_seconds")
    return fault


async def add_faults(request: Request, state: State) -> Response:
    body = await json_body(request)
    state.faults.extend(_parse_fault(s) for s in (body if isinstance(body, list) else [body]))
    return JSONResponse({"pending": [f.describe() for f in state.faults]})


async def list_faults(request: Request, state: State) -> Response:
    return JSONResponse({"pending": [f.describe() for f in state.faults]})


async def add_race(request: Request, state: State) -> Response:
    """Arm a race: after the stand-in answers a `GET /examples` listing, "another writer" creates
    examples, so the pipeline's next create of them is refused whole with 409.
    `{"examples": [spec, ...]}` creates those (each spec may name its `dataset_id`, else the listed
    dataset's); `{"times": N, "per_list": k}` creates, after each of the next N listings that ask for
    ids which do not exist, k of those ids (all when k is absent)."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    specs = body.get("examples") or []
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise BadRequest("examples must be a list of example specs")
    try:
        times = int(body.get("times", 1))
        per_list = int(body["per_list"]) if body.get("per_list") is not None else None
    except (TypeError, ValueError):
        raise BadRequest("times and per_list must be integers") from None
    if times < 1 or (per_list is not None and per_list < 1):
        raise BadRequest("times and per_list must be at least 1")
    state.races.append(Race(times=times, examples=specs, per_list=per_list))
    return JSONResponse({"pending": [r.describe() for r in state.races]})


async def list_races(request: Request, state: State) -> Response:
    return JSONResponse({"pending": [r.describe() for r in state.races]})


async def add_rules(request: Request, state: State) -> Response:
    stored = []
    for spec in _items(await json_body(request), "rules"):
        rule = normalize_rule(spec)
        state.rules[rule["id"]] = rule
        stored.append(rule["id"])
    return JSONResponse({"stored": len(stored), "ids": stored})
