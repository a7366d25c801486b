"""Annotation-queue items, as the SDK's `client.annotation_queues.items` resource calls them
(resources/annotation_queues/items.py, types/annotation_queues/item_create_params.py): `POST
/api/v1/platform/annotation-queues/{queue_id}/items` with `{"items": [{"item_type": "RUN", "run_id",
"project_id" | "session_id", "start_time"}, ...]}` answers `{"items": [...]}`; a RUN item needs
`run_id`, a THREAD item `thread_id` and `project_id` (its docstring). `GET` on the same path lists
them, cursor-paged (`AsyncItemsCursorGetPagination`, page size at most 100). The endpoints came with
server 0.16.14 (`Client.annotation_queues` checks that version), so the older profiles (`v1-only`,
`v2-only-old`) have none: 404, as for any route a server does not have.

An item's `start_time` must be a date-time with an offset (422 otherwise): the API's schema types it
`format: date-time` (RFC 3339; see `rfc3339_or_none` in state.py), and the webhook example payload's
times have none (`"2024-04-05T01:28:54.085646"`, docs "Use webhooks"), so a client that passes them
on unchanged is refused here as a strict server would refuse it.

Adding the same run twice makes two items here: the docs promise no de-duplication, so a client
that must not add twice has to remember what it added.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.state import (
    TENANT_ID,
    ApiError,
    BadRequest,
    State,
    Unprocessable,
    iso,
    json_body,
    rfc3339_or_none,
    uuid_or_none,
)

PAGE_DEFAULT, PAGE_MAX = 20, 100


def _queue(state: State, queue_id: Any) -> str:
    if not state.profile.v2_api or not state.profile.queue_items:
        raise ApiError(404, "Not Found")
    found = uuid_or_none(queue_id)
    if found is None or found not in state.queues:
        raise ApiError(404, "Annotation queue not found")
    return found


def _item(queue_id: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise Unprocessable("each item must be an object")
    kind = spec.get("item_type") or "RUN"
    project = uuid_or_none(spec.get("project_id") or spec.get("session_id"))
    if kind == "RUN":
        run_id = uuid_or_none(spec.get("run_id"))
        if run_id is None:
            raise Unprocessable("a RUN item needs run_id (a UUID)")
        thread = None
    elif kind == "THREAD":
        run_id, thread = None, spec.get("thread_id")
        if not thread or project is None:
            raise Unprocessable("a THREAD item needs thread_id and project_id")
    else:
        raise Unprocessable("item_type must be RUN or THREAD")
    if spec.get("start_time") is not None and rfc3339_or_none(spec["start_time"]) is None:
        raise Unprocessable(f"start_time: {str(spec['start_time'])[:40]!r} is not a date-time with a timezone "
                            "(the schema's format is date-time, RFC 3339)")
    return {
        "id": str(uuid.uuid4()),
        "queue_id": queue_id,
        "item_type": kind,
        "run_id": run_id,
        "thread_id": thread,
        "project_id": project,
        "start_time": spec.get("start_time"),
        "source_proposed_example_id": spec.get("source_proposed_example_id"),
        "added_at": iso(),
        "last_reviewed_time": None,
    }


async def add_items(request: Request, state: State) -> Response:
    queue_id = _queue(state, request.path_params["queue_id"])
    body = await json_body(request)
    specs = body.get("items") if isinstance(body, dict) else None
    if not isinstance(specs, list) or not specs:
        raise Unprocessable("items must be a non-empty list")
    items = [_item(queue_id, spec) for spec in specs]
    state.queues[queue_id]["items"].extend(items)
    return JSONResponse({"items": items})


async def list_items(request: Request, state: State) -> Response:
    queue_id = _queue(state, request.path_params["queue_id"])
    params = request.query_params
    try:
        page_size = int(params.get("page_size", PAGE_DEFAULT))
        offset = json.loads(base64.urlsafe_b64decode(params["cursor"]))["offset"] if params.get("cursor") else 0
    except (ValueError, KeyError, TypeError):
        raise Unprocessable("page_size must be an integer and cursor one this server gave out") from None
    if not 1 <= page_size <= PAGE_MAX:
        raise Unprocessable(f"page_size must be between 1 and {PAGE_MAX}")
    items = [i for i in state.queues[queue_id]["items"] if params.get("item_type") in (None, i["item_type"])]
    following = offset + page_size
    cursor = base64.urlsafe_b64encode(json.dumps({"offset": following}).encode()).decode()
    return JSONResponse({"items": items[offset:following], "next_cursor": cursor if following < len(items) else None})


async def list_queues(request: Request, state: State) -> Response:
    """`GET /api/v1/annotation-queues`, as the generated client's
    `annotation_queues.retrieve_annotation_queues` calls it: `name` filters on the exact name,
    `limit`/`offset` page, and the answer is a top-level JSON array
    (`AsyncOffsetPaginationTopLevelArray`) of queues with the fields its response model requires
    (`AnnotationQueueRetrieveAnnotationQueuesResponse`: id, name, queue_type, tenant_id,
    total_runs)."""
    if not state.profile.v2_api:
        raise ApiError(404, "Not Found")
    params = request.query_params
    try:
        limit = int(params.get("limit", PAGE_MAX))
        offset = int(params.get("offset", 0))
    except ValueError:
        raise Unprocessable("limit and offset must be integers") from None
    if not 1 <= limit <= PAGE_MAX or offset < 0:
        raise Unprocessable(f"limit must be between 1 and {PAGE_MAX}, offset at least 0")
    name = params.get("name")
    queues = [q for q in state.queues.values() if name is None or q["name"] == name]
    return JSONResponse([{"id": q["id"], "name": q["name"], "queue_type": "single", "tenant_id": TENANT_ID,
                          "total_runs": len(q["items"])} for q in queues[offset:offset + limit]])


async def admin_add_queue(request: Request, state: State) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise BadRequest('body must be {"name": ..., "id": optional UUID}')
    queue_id = uuid_or_none(body.get("id")) or str(uuid.uuid4())
    state.queues[queue_id] = {"id": queue_id, "name": body["name"], "items": []}
    return JSONResponse({"id": queue_id, "name": body["name"]})


async def admin_read_items(request: Request, state: State) -> Response:
    queue = state.queues.get(uuid_or_none(request.path_params["queue_id"]) or "")
    if queue is None:
        raise ApiError(404, "Annotation queue not found")
    return JSONResponse(queue["items"])
