"""Feedback: list (`Client.list_feedback`), update (`Client.update_feedback`), and the shape it is stored in.

Fields as the docs' "Feedback data format" lists them (id, created_at, modified_at, session_id, run_id,
key, score, value, comment, correction, feedback_source). `GET /feedback` refuses a `limit` over 100 with
422, which is why `Client.list_feedback` asks `min(limit, 100)`.

A person who corrects an evaluator's score leaves `correction: {"score": <number>}` on that feedback
(docs "How to audit evaluator scores": `client.update_feedback(id, correction={"score": 1})`); the
evaluator's own `score` stays as it was and `modified_at` moves. Such a correction is a corrected
score, not a reference output; the stand-in stores it like any correction and leaves the judgement
to the pipeline.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.state import (
    BadRequest,
    State,
    Unprocessable,
    detail,
    iso,
    json_body,
    uuid_or_none,
    uuid_params,
)

LIMIT_MAX = 100


def normalize_feedback(spec: dict[str, Any], state: State, existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stored feedback item from an admin spec; on an existing id the spec's fields win and
    `modified_at` moves to now unless the spec gives one."""
    if existing is None and not isinstance(spec.get("key"), str):
        raise BadRequest("each feedback needs a key")
    item = {**copy.deepcopy(existing or {}), **copy.deepcopy(spec)}
    run_id = uuid_or_none(item.get("run_id"))
    created = item.get("created_at") or iso()
    run = state.runs.get(run_id or "") or {}
    item.update(
        id=uuid_or_none(item.get("id")) or str(uuid.uuid4()),
        run_id=run_id,
        trace_id=item.get("trace_id") or run.get("trace_id") or run_id,
        session_id=item.get("session_id") or run.get("session_id"),
        created_at=created,
        modified_at=spec.get("modified_at") or (iso() if existing else created),
    )
    for key in ("score", "value", "comment", "correction", "extra"):
        item.setdefault(key, None)
    item.setdefault("feedback_source", {"type": "api", "metadata": {}})
    return item


async def list_feedback(request: Request, state: State) -> Response:
    params = request.query_params
    try:
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", LIMIT_MAX))
    except ValueError:
        raise Unprocessable("offset and limit must be integers") from None
    if not 1 <= limit <= LIMIT_MAX or offset < 0:
        raise Unprocessable(f"limit must be between 1 and {LIMIT_MAX}")
    runs = set(uuid_params(request, "run"))
    keys = set(params.getlist("key"))
    found = [
        f for f in state.feedback.values() if (not runs or f["run_id"] in runs) and (not keys or f["key"] in keys)
    ]
    return JSONResponse(found[offset : offset + limit])


async def update_feedback(request: Request, state: State) -> Response:
    feedback_id = uuid_or_none(request.path_params["feedback_id"])
    existing = state.feedback.get(feedback_id or "")
    if existing is None:
        return detail(404, "Feedback not found")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    change = {k: body[k] for k in ("score", "value", "correction", "comment") if k in body}
    state.feedback[existing["id"]] = normalize_feedback(change, state, existing)
    return JSONResponse(state.feedback[existing["id"]])
