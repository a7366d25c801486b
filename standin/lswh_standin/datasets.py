"""`/info`, projects (sessions) and datasets."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.state import (
    SESSION_ID,
    TENANT_ID,
    BadRequest,
    State,
    detail,
    iso,
    json_body,
    uuid_or_none,
)

PAGE_MAX = 100


def page(items: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
    """An offset page; a limit above 100 is cut to 100 (the SDK's `_get_paginated_list` asks 100)."""
    try:
        offset = max(0, int(request.query_params.get("offset", 0)))
        limit = min(PAGE_MAX, max(1, int(request.query_params.get("limit", PAGE_MAX))))
    except ValueError:
        raise BadRequest("offset and limit must be integers") from None
    return items[offset : offset + limit]


async def info(request: Request, state: State) -> Response:
    """The profile's `/info`; while `info_failures` lasts, 503 instead: a server restarting or behind a
    load balancer without a healthy backend. The SDK's `Client.info` then caches an empty
    `LangSmithInfo` for the client's life (client.py, `except BaseException`), which is what a
    worker must not do (issue 16)."""
    if state.info_failures > 0:
        state.info_failures -= 1
        return detail(503, "Service Unavailable")
    return JSONResponse(state.profile.info())


async def list_sessions(request: Request, state: State) -> Response:
    # The SDK reads its tenant id from the first project when it builds Dataset/Example URLs.
    session = {
        "id": SESSION_ID,
        "name": "default",
        "tenant_id": TENANT_ID,
        "start_time": iso(),
        "reference_dataset_id": None,
        "extra": None,
        "description": None,
    }
    return JSONResponse(page([session], request))


def dataset_out(state: State, dataset: dict[str, Any]) -> dict[str, Any]:
    count = sum(1 for e in state.examples.values() if e["dataset_id"] == dataset["id"])
    return {**dataset, "example_count": count}


async def create_dataset(request: Request, state: State) -> Response:
    body = await json_body(request)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("name is required")
    if any(d["name"] == name for d in state.datasets.values()):
        return detail(409, "Dataset with this name already exists.")
    now = iso()
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
    return JSONResponse(dataset_out(state, dataset))


async def list_datasets(request: Request, state: State) -> Response:
    params = request.query_params
    ids = {i for i in (uuid_or_none(v) for v in params.getlist("id")) if i}
    name, contains = params.get("name"), params.get("name_contains")
    found = [
        dataset_out(state, d)
        for d in state.datasets.values()
        if (not ids or d["id"] in ids)
        and (name is None or d["name"] == name)
        and (contains is None or contains in d["name"])
    ]
    return JSONResponse(page(found, request))


async def read_dataset(request: Request, state: State) -> Response:
    dataset = state.datasets.get(uuid_or_none(request.path_params["dataset_id"]) or "")
    if dataset is None:
        return detail(404, "Dataset not found")
    return JSONResponse(dataset_out(state, dataset))
