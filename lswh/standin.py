"""A local LangSmith stand-in for tests and `lswh dev`.

It answers the API calls the workers make through the real `langsmith` SDK (0.15.x),
serves presigned-looking S3 objects, injects faults and latency, and has an admin API
under `/_admin` (no auth) to preload runs, feedback and objects and to read back what
the pipeline wrote. All state is in memory.

    python -m lswh.standin --port 1984 [--latency-ms N] [--api-key K ...] [--preload-fixture]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

DEFAULT_API_KEY = "lsv2-standin-key"
FIXTURE_PATH = Path(__file__).parent / "fixtures" / "langsmith_docs_payload.json"
FIXTURE_INPUTS = {"query": "How do I turn traced runs into dataset examples in LangSmith?"}
FIXTURE_OUTPUTS = {
    "output": "Add an automation rule on your tracing project that adds matching runs to a dataset."
}
DEFAULT_BUCKET = "lswh-standin"
TENANT_ID = "2ebda79f-2946-4491-a9ad-d642f49e0815"
SESSION_ID = "6a3be6a2-9a8c-4fc8-b4c6-a8983b286cc5"
PAGE_MAX = 100
# What `GET /info` advertises. `dataset_examples_multipart_enabled` makes SDK 0.15 create
# and update examples through the multipart endpoints, as it does against LangSmith cloud;
# a Client built with `info={"instance_flags": {}}` uses the JSON `/examples/bulk` ones.
INSTANCE_FLAGS = {
    "dataset_examples_multipart_enabled": True,
    "examples_multipart_enabled": True,
    "ch_query_enabled": True,
    "sdb_query_enabled": False,
}

Handler = Callable[[Request, "State"], Awaitable[Response]]


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None = None) -> str:
    return (moment or _now()).isoformat()


def _uuid_or_none(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


class BadRequest(Exception):
    """A request the stand-in refuses with 400."""


@dataclass
class Fault:
    method: str
    prefix: str
    times: int
    status: int | None = None
    retry_after: int | None = None
    stall_seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and path.startswith(self.prefix)

    def describe(self) -> dict[str, Any]:
        return {
            "route": f"{self.method} {self.prefix}",
            "times": self.times,
            "status": self.status,
            "retry_after": self.retry_after,
            "stall_seconds": self.stall_seconds,
        }


@dataclass
class S3Object:
    data: bytes
    redirect_to: str | None = None


@dataclass
class State:
    api_keys: set[str]
    startup_latency_ms: int
    latency_ms: int = 0
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    objects: dict[str, S3Object] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def sign(self, bucket: str, key: str, amz_date: str, expires: str) -> str:
        message = f"{bucket}\n{key}\n{amz_date}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def reset(self, *, everything: bool) -> None:
        self.datasets.clear()
        self.examples.clear()
        self.faults.clear()
        self.stats.clear()
        self.latency_ms = self.startup_latency_ms
        if everything:
            self.runs.clear()
            self.feedback.clear()
            self.objects.clear()


def _state(request: Request) -> State:
    state: State = request.app.state.standin
    return state


def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _s3_error(status: int, code: str, message: str) -> Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as e:
        raise BadRequest(f"body is not JSON: {e}") from None


def _page(items: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
    try:
        offset = max(0, int(request.query_params.get("offset", 0)))
        limit = min(PAGE_MAX, max(1, int(request.query_params.get("limit", PAGE_MAX))))
    except ValueError:
        raise BadRequest("offset and limit must be integers") from None
    return items[offset : offset + limit]


def _route(template: str, handler: Handler, methods: list[str], *, auth: bool = True) -> Route:
    """An API or S3 route: counted, slowed, faulted and authenticated, in that order."""
    stats_key = re.sub(r":\w+}", "}", template)

    async def endpoint(request: Request) -> Response:
        state = _state(request)
        state.stats[f"{request.method} {stats_key}"] += 1
        if state.latency_ms > 0:
            await asyncio.sleep(state.latency_ms / 1000)
        fault = state.take_fault(request.method, request.url.path)
        if fault is not None:
            if fault.stall_seconds > 0:
                await asyncio.sleep(fault.stall_seconds)
            if fault.status is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                return _detail(fault.status, f"injected fault ({fault.status})", headers)
        if auth and request.headers.get("x-api-key") not in state.api_keys:
            return _detail(401, "Invalid token")
        try:
            return await handler(request, state)
        except BadRequest as e:
            return _detail(400, str(e))

    return Route(template, endpoint, methods=methods)


def _admin(template: str, handler: Handler, methods: list[str]) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, _state(request))
        except BadRequest as e:
            return _detail(400, str(e))

    return Route(template, endpoint, methods=methods)


# --- info, sessions, datasets ---------------------------------------------------------


async def info(request: Request, state: State) -> Response:
    return JSONResponse(
        {
            "version": "0.16.0",
            "license_expiration_time": None,
            "batch_ingest_config": {
                "use_multipart_endpoint": True,
                "size_limit": 100,
                "size_limit_bytes": 20_971_520,
            },
            "instance_flags": INSTANCE_FLAGS,
        }
    )


async def list_sessions(request: Request, state: State) -> Response:
    # The SDK reads its tenant id from the first project when it builds Dataset/Example URLs.
    session = {
        "id": SESSION_ID,
        "name": "default",
        "tenant_id": TENANT_ID,
        "start_time": _iso(),
        "reference_dataset_id": None,
        "extra": None,
        "description": None,
    }
    return JSONResponse(_page([session], request))


def _dataset_out(state: State, dataset: dict[str, Any]) -> dict[str, Any]:
    count = sum(1 for e in state.examples.values() if e["dataset_id"] == dataset["id"])
    return {**dataset, "example_count": count}


async def create_dataset(request: Request, state: State) -> Response:
    body = await _json_body(request)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("name is required")
    if any(d["name"] == name for d in state.datasets.values()):
        return _detail(409, "Dataset with this name already exists.")
    now = _iso()
    dataset = {
        "id": str(uuid.uuid4()),
        "name": name,
        "description": body.get("description"),
        "data_type": body.get("data_type") or "kv",
        "created_at": now,
        "modified_at": now,
        "session_count": 0,
        "last_session_start_time": None,
        "tenant_id": TENANT_ID,
        "inputs_schema_definition": body.get("inputs_schema_definition"),
        "outputs_schema_definition": body.get("outputs_schema_definition"),
        "transformations": body.get("transformations"),
        "metadata": (body.get("extra") or {}).get("metadata"),
    }
    state.datasets[dataset["id"]] = dataset
    return JSONResponse(_dataset_out(state, dataset))


async def list_datasets(request: Request, state: State) -> Response:
    params = request.query_params
    ids = {i for i in (_uuid_or_none(v) for v in params.getlist("id")) if i}
    name, contains = params.get("name"), params.get("name_contains")
    found = [
        _dataset_out(state, d)
        for d in state.datasets.values()
        if (not ids or d["id"] in ids)
        and (name is None or d["name"] == name)
        and (contains is None or contains in d["name"])
    ]
    return JSONResponse(_page(found, request))


async def read_dataset(request: Request, state: State) -> Response:
    dataset = state.datasets.get(_uuid_or_none(request.path_params["dataset_id"]) or "")
    if dataset is None:
        return _detail(404, "Dataset not found")
    return JSONResponse(_dataset_out(state, dataset))


# --- examples ---------------------------------------------------------------------------


def _new_example(dataset_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    now = _iso()
    return {
        "id": _uuid_or_none(spec.get("id")) or str(uuid.uuid4()),
        "dataset_id": dataset_id,
        "name": None,
        "inputs": spec.get("inputs"),
        "outputs": spec.get("outputs"),
        "metadata": spec.get("metadata"),
        "split": spec.get("split"),
        "source_run_id": _uuid_or_none(spec.get("source_run_id")),
        "created_at": spec.get("created_at") or now,
        "modified_at": now,
        "attachment_urls": None,
    }


def _insert_all(state: State, new: list[dict[str, Any]]) -> Response | None:
    """Store every example or, when one id is taken, none of them (409), as LangSmith may."""
    ids = [e["id"] for e in new]
    taken = sorted({i for i in ids if i in state.examples} | {i for i in ids if ids.count(i) > 1})
    if taken:
        return _detail(409, f"Example(s) already exist: {', '.join(taken)}")
    for example in new:
        state.examples[example["id"]] = example
    return None


def _dataset_or_404(state: State, dataset_id: Any) -> str | Response:
    found = _uuid_or_none(dataset_id)
    if found is None or found not in state.datasets:
        return _detail(404, "Dataset not found")
    return found


async def create_example(request: Request, state: State) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    dataset_id = _dataset_or_404(state, body.get("dataset_id"))
    if isinstance(dataset_id, Response):
        return dataset_id
    example = _new_example(dataset_id, body)
    return _insert_all(state, [example]) or JSONResponse(example)


async def create_examples_bulk(request: Request, state: State) -> Response:
    body = await _json_body(request)
    if not isinstance(body, list) or not all(isinstance(e, dict) for e in body):
        raise BadRequest("body must be a list of examples")
    new = []
    for spec in body:
        dataset_id = _dataset_or_404(state, spec.get("dataset_id"))
        if isinstance(dataset_id, Response):
            return dataset_id
        new.append(_new_example(dataset_id, spec))
    return _insert_all(state, new) or JSONResponse(new)


def _multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each part of a multipart/form-data body, as requests-toolbelt writes it."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise BadRequest("expected multipart/form-data")
    parts = []
    for chunk in body.split(b"--" + match.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name is None:
            raise BadRequest("multipart part without a name")
        parts.append((name.group(1).decode(), data.removesuffix(b"\r\n")))
    return parts


def _examples_from_parts(parts: Iterable[tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
    """Group `<id>`, `<id>.inputs`, `<id>.outputs` parts into one spec per example id."""
    specs: dict[str, dict[str, Any]] = {}
    for name, data in parts:
        example_id, _, part = name.partition(".")
        spec = specs.setdefault(example_id, {"id": example_id})
        if part.startswith("attachment"):
            continue  # attachments are not part of what the pipeline writes
        try:
            value = json.loads(data)
        except ValueError:
            raise BadRequest(f"part {name} is not JSON") from None
        if part == "":
            spec.update(value)
        elif part in ("inputs", "outputs"):
            spec[part] = value
    for example_id in specs:
        if _uuid_or_none(example_id) is None:
            raise BadRequest(f"bad example id {example_id!r}")
    return specs


async def create_examples_multipart(request: Request, state: State) -> Response:
    dataset_id = _dataset_or_404(state, request.path_params["dataset_id"])
    if isinstance(dataset_id, Response):
        return dataset_id
    specs = _examples_from_parts(_multipart(await request.body(), request.headers.get("content-type", "")))
    new = [_new_example(dataset_id, spec) for spec in specs.values()]
    refused = _insert_all(state, new)
    if refused is not None:
        return refused
    return JSONResponse({"example_ids": [e["id"] for e in new], "count": len(new), "as_of": _iso()})


def _update_all(state: State, updates: list[dict[str, Any]], dataset_id: str | None = None) -> Response:
    """Apply every update or, when one example is unknown, none of them (404)."""
    ids = [_uuid_or_none(u.get("id")) for u in updates]
    missing = [
        str(u.get("id"))
        for u, i in zip(updates, ids, strict=True)
        if i is None
        or i not in state.examples
        or (dataset_id is not None and state.examples[i]["dataset_id"] != dataset_id)
    ]
    if missing:
        return _detail(404, f"Example(s) not found: {', '.join(missing)}")
    for update, example_id in zip(updates, ids, strict=True):
        example = state.examples[str(example_id)]
        for key in ("inputs", "outputs", "metadata", "split"):
            if key in update:
                example[key] = update[key]
        if update.get("dataset_id") and _uuid_or_none(update["dataset_id"]) in state.datasets:
            example["dataset_id"] = _uuid_or_none(update["dataset_id"])
        example["modified_at"] = _iso()
    done = [str(i) for i in ids]
    return JSONResponse(
        {"message": f"{len(done)} examples updated", "count": len(done), "example_ids": done, "as_of": _iso()}
    )


async def update_examples_bulk(request: Request, state: State) -> Response:
    body = await _json_body(request)
    if not isinstance(body, list) or not all(isinstance(u, dict) for u in body):
        raise BadRequest("body must be a list of example updates")
    return _update_all(state, body)


async def update_examples_multipart(request: Request, state: State) -> Response:
    dataset_id = _dataset_or_404(state, request.path_params["dataset_id"])
    if isinstance(dataset_id, Response):
        return dataset_id
    specs = _examples_from_parts(_multipart(await request.body(), request.headers.get("content-type", "")))
    return _update_all(state, list(specs.values()), dataset_id)


async def update_example(request: Request, state: State) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    response = _update_all(state, [{**body, "id": request.path_params["example_id"]}])
    if response.status_code != 200:
        return response
    return JSONResponse({"message": "Example updated successfully"})


async def read_example(request: Request, state: State) -> Response:
    example = state.examples.get(_uuid_or_none(request.path_params["example_id"]) or "")
    if example is None:
        return _detail(404, "Example not found")
    return JSONResponse(example)


async def list_examples(request: Request, state: State) -> Response:
    params = request.query_params
    ids = {_uuid_or_none(v) for v in params.getlist("id")}
    datasets = {_uuid_or_none(v) for v in params.getlist("dataset")}
    found = [
        e
        for e in state.examples.values()
        if (not ids or e["id"] in ids) and (not datasets or e["dataset_id"] in datasets)
    ]
    return JSONResponse(_page(found, request))


# --- runs, feedback, S3 -----------------------------------------------------------------


async def read_run(request: Request, state: State) -> Response:
    run = state.runs.get(_uuid_or_none(request.path_params["run_id"]) or "")
    if run is None:
        return _detail(404, "Run not found")
    return JSONResponse(run)


async def list_feedback(request: Request, state: State) -> Response:
    params = request.query_params
    runs = {_uuid_or_none(v) for v in params.getlist("run")}
    keys = set(params.getlist("key"))
    found = [
        f for f in state.feedback if (not runs or f["run_id"] in runs) and (not keys or f["key"] in keys)
    ]
    return JSONResponse(_page(found, request))


async def read_s3_object(request: Request, state: State) -> Response:
    bucket, key = request.path_params["bucket"], request.path_params["key"]
    params = request.query_params
    amz_date, expires = params.get("X-Amz-Date", ""), params.get("X-Amz-Expires", "")
    signature = params.get("X-Amz-Signature", "")
    if not signature or not hmac.compare_digest(signature, state.sign(bucket, key, amz_date, expires)):
        return _s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if _now() > signed_at + timedelta(seconds=int(expires)):
        return _s3_error(403, "AccessDenied", "Request has expired")
    obj = state.objects.get(f"{bucket}/{key}")
    if obj is None:
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
    if obj.redirect_to is not None:
        return RedirectResponse(obj.redirect_to, status_code=302)
    return Response(obj.data, media_type="application/json")


# --- admin ------------------------------------------------------------------------------


def _items(body: Any, name: str) -> list[dict[str, Any]]:
    items = body.get(name) if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest(f"body must be a list of {name} (or {{{name!r}: [...]}})")
    return items


def _normalize_run(spec: dict[str, Any]) -> dict[str, Any]:
    run = copy.deepcopy(spec)
    run_id = _uuid_or_none(run.get("id")) or str(uuid.uuid4())
    start = run.get("start_time") or _iso()
    run.update(id=run_id, start_time=start)
    run.setdefault("name", "run")
    run.setdefault("run_type", "chain")
    run["trace_id"] = _uuid_or_none(run.get("trace_id")) or run_id
    run.setdefault("dotted_order", f"{datetime.fromisoformat(start).strftime('%Y%m%dT%H%M%S%fZ')}{run_id}")
    run.setdefault("session_id", SESSION_ID)
    run.setdefault("status", "success")
    run.setdefault("inputs", {})
    run.setdefault("outputs", None)
    run.setdefault("extra", {"metadata": {}})
    run.setdefault("parent_run_ids", [])
    return run


async def admin_runs(request: Request, state: State) -> Response:
    runs = [_normalize_run(r) for r in _items(await _json_body(request), "runs")]
    state.runs.update((r["id"], r) for r in runs)
    return JSONResponse({"stored": len(runs), "ids": [r["id"] for r in runs]})


def _normalize_feedback(spec: dict[str, Any], state: State) -> dict[str, Any]:
    if not isinstance(spec.get("key"), str):
        raise BadRequest("each feedback needs a key")
    item = copy.deepcopy(spec)
    run_id = _uuid_or_none(item.get("run_id"))
    created = item.get("created_at") or _iso()
    trace_id = item.get("trace_id") or (state.runs.get(run_id or "") or {}).get("trace_id") or run_id
    item.update(
        id=_uuid_or_none(item.get("id")) or str(uuid.uuid4()),
        run_id=run_id,
        trace_id=trace_id,
        created_at=created,
        modified_at=item.get("modified_at") or created,
    )
    for key in ("score", "value", "comment", "correction", "session_id", "extra"):
        item.setdefault(key, None)
    item.setdefault("feedback_source", {"type": "api", "metadata": {}})
    return item


async def admin_feedback(request: Request, state: State) -> Response:
    items = [_normalize_feedback(f, state) for f in _items(await _json_body(request), "feedback")]
    state.feedback.extend(items)
    return JSONResponse({"stored": len(items), "ids": [f["id"] for f in items]})


async def admin_s3(request: Request, state: State) -> Response:
    """Store an object; answer a presigned-looking URL to it on this server."""
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    bucket = str(body.get("bucket") or DEFAULT_BUCKET)
    key = str(body.get("key") or f"runs/{uuid.uuid4()}.json")
    data = json.dumps(body.get("body")).encode()
    size = int(body.get("size_bytes") or 0)
    # Trailing whitespace keeps the padded object valid JSON.
    data += b" " * max(0, size - len(data))
    state.objects[f"{bucket}/{key}"] = S3Object(data, body.get("redirect_to"))
    expires_in = int(body.get("expires_in", 3600))
    expires = max(expires_in, 1)
    # Already expired when expires_in <= 0: signed long enough ago.
    signed_at = _now() - timedelta(seconds=0 if expires_in > 0 else 2 - expires_in)
    amz_date = signed_at.strftime("%Y%m%dT%H%M%SZ")
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"AKIASTANDIN/{amz_date[:8]}/us-east-1/s3/aws4_request",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": state.sign(bucket, key, amz_date, str(expires)),
    }
    base = str(request.base_url).rstrip("/")
    url = f"{base}/s3/{bucket}/{quote(key)}?{urlencode(query)}"
    return JSONResponse({"url": url, "s3_url": f"s3://{bucket}/{key}", "key": key, "bucket": bucket})


async def admin_delete_s3(request: Request, state: State) -> Response:
    name = f"{request.query_params.get('bucket') or DEFAULT_BUCKET}/{request.path_params['key']}"
    return JSONResponse({"deleted": state.objects.pop(name, None) is not None})


async def admin_examples(request: Request, state: State) -> Response:
    name = request.query_params.get("dataset")
    ids = {d["id"] for d in state.datasets.values() if name is None or d["name"] == name}
    return JSONResponse([e for e in state.examples.values() if e["dataset_id"] in ids])


async def admin_datasets(request: Request, state: State) -> Response:
    return JSONResponse([_dataset_out(state, d) for d in state.datasets.values()])


async def admin_stats(request: Request, state: State) -> Response:
    return JSONResponse({"total": sum(state.stats.values()), "requests": dict(state.stats)})


async def admin_reset(request: Request, state: State) -> Response:
    body = await _json_body(request) if await request.body() else {}
    state.reset(everything=bool(isinstance(body, dict) and body.get("all")))
    return JSONResponse({"reset": True})


async def admin_latency(request: Request, state: State) -> Response:
    body = await _json_body(request)
    try:
        state.latency_ms = max(0, int(body["ms"]))
    except (TypeError, KeyError, ValueError):
        raise BadRequest('body must be {"ms": <int>}') from None
    return JSONResponse({"ms": state.latency_ms})


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


async def admin_add_faults(request: Request, state: State) -> Response:
    body = await _json_body(request)
    faults = [_parse_fault(s) for s in (body if isinstance(body, list) else [body])]
    state.faults.extend(faults)
    return JSONResponse({"pending": [f.describe() for f in state.faults]})


async def admin_list_faults(request: Request, state: State) -> Response:
    return JSONResponse({"pending": [f.describe() for f in state.faults]})


# --- app ----------------------------------------------------------------------------------


def fixture_run() -> dict[str, Any]:
    """The run of the docs fixture payload, with the inputs and outputs LangSmith would store."""
    run = json.loads(FIXTURE_PATH.read_text())["runs"][0]
    return _normalize_run({**run, "inputs": FIXTURE_INPUTS, "outputs": FIXTURE_OUTPUTS})


def create_app(
    *, api_keys: list[str] | None = None, latency_ms: int = 0, preload_fixture: bool = False
) -> Starlette:
    """The stand-in app; it accepts `DEFAULT_API_KEY` and each of `api_keys`."""
    state = State(
        api_keys={DEFAULT_API_KEY, *(k for k in api_keys or [] if k)},
        startup_latency_ms=latency_ms,
        latency_ms=latency_ms,
    )
    if preload_fixture:
        run = fixture_run()
        state.runs[run["id"]] = run
    platform = "/v1/platform/datasets/{dataset_id}/examples"
    routes = [
        _route("/info", info, ["GET"], auth=False),
        _route("/sessions", list_sessions, ["GET"]),
        _route("/datasets", create_dataset, ["POST"]),
        _route("/datasets", list_datasets, ["GET"]),
        _route("/datasets/{dataset_id}", read_dataset, ["GET"]),
        _route("/examples", create_example, ["POST"]),
        _route("/examples", list_examples, ["GET"]),
        _route("/examples/bulk", create_examples_bulk, ["POST"]),
        _route("/examples/bulk", update_examples_bulk, ["PATCH"]),
        _route("/examples/{example_id}", read_example, ["GET"]),
        _route("/examples/{example_id}", update_example, ["PATCH"]),
        _route(platform, create_examples_multipart, ["POST"]),
        _route(platform, update_examples_multipart, ["PATCH"]),
        _route("/runs/{run_id}", read_run, ["GET"]),
        _route("/feedback", list_feedback, ["GET"]),
        _route("/s3/{bucket}/{key:path}", read_s3_object, ["GET"], auth=False),
        _admin("/_admin/runs", admin_runs, ["POST"]),
        _admin("/_admin/feedback", admin_feedback, ["POST"]),
        _admin("/_admin/s3", admin_s3, ["POST"]),
        _admin("/_admin/s3/{key:path}", admin_delete_s3, ["DELETE"]),
        _admin("/_admin/examples", admin_examples, ["GET"]),
        _admin("/_admin/datasets", admin_datasets, ["GET"]),
        _admin("/_admin/stats", admin_stats, ["GET"]),
        _admin("/_admin/reset", admin_reset, ["POST"]),
        _admin("/_admin/latency", admin_latency, ["POST"]),
        _admin("/_admin/faults", admin_add_faults, ["POST"]),
        _admin("/_admin/faults", admin_list_faults, ["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.standin = state
    return app


def _env_keys() -> list[str]:
    return [k.strip() for k in os.environ.get("STANDIN_API_KEYS", "").split(",") if k.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


app = create_app(
    api_keys=_env_keys(),
    latency_ms=int(os.environ.get("STANDIN_LATENCY_MS") or 0),
    preload_fixture=_env_flag("STANDIN_PRELOAD_FIXTURE"),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lswh.standin", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1984)
    parser.add_argument("--latency-ms", type=int, default=int(os.environ.get("STANDIN_LATENCY_MS") or 0))
    parser.add_argument("--api-key", action="append", default=[], help="an accepted key (repeatable)")
    parser.add_argument(
        "--preload-fixture", action="store_true", default=_env_flag("STANDIN_PRELOAD_FIXTURE")
    )
    args = parser.parse_args(argv)

    import uvicorn

    standin = create_app(
        api_keys=[*_env_keys(), *args.api_key],
        latency_ms=args.latency_ms,
        preload_fixture=args.preload_fixture,
    )
    uvicorn.run(standin, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
