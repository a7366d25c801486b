"""Automation rules, listed as `GET /api/v2/runs/rules` lists them.

The SDK's generated client calls it `evaluators.list_v2` (resources/evaluators.py; `client.evaluators`
on the handwritten Client is the online-evaluators resource, so reach it through the generated
client). Query: `id` (repeatable), `cursor`, `dataset_id`, `evaluator_id`, `name_contains`,
`page_size`, `project_id`, `type` (PROJECT | DATASET); order: `updated_at` then `id`, newest first;
page: `{"items", "next_cursor"}` with the cursor sent back as a query parameter
(pagination.py `AsyncItemsCursorGetPagination`). Items carry the fields types/rule.py requires.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.state import TENANT_ID, ApiError, BadRequest, State, Unprocessable, iso, uuid_or_none

PAGE_DEFAULT, PAGE_MAX = 20, 100


def normalize_rule(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("project_id") is None and spec.get("dataset_id") is None:
        raise BadRequest("a rule needs a project_id or a dataset_id")
    now = iso()
    rule: dict[str, Any] = {
        "id": uuid_or_none(spec.get("id")) or str(uuid.uuid4()),
        "display_name": "rule",
        "created_at": now,
        "updated_at": now,
        "tenant_id": TENANT_ID,
        "is_enabled": True,
        "sampling_rate": 1.0,
        "filter": None,
        "trace_filter": None,
        "tree_filter": None,
        "webhooks": None,
        "add_to_dataset_id": None,
        "add_to_dataset_prefer_correction": False,
        "evaluator_version": 1,
        "extend_only": False,
        "include_extended_stats": False,
        "is_managed_evaluator": False,
        "is_tracing_disabled": False,
        "transient": False,
        "use_corrections_dataset": False,
        "backfill_from": None,
        # Since August 2026 a rule matches runs or whole threads (docs PR langchain-ai/docs#5559: "A
        # rule matches either individual runs or entire threads"; SDK types/rule.py: `group_by`
        # THREAD_ID | TRAJECTORY_ID, `thread_filter`). Kept as the admin spec gives it, any case.
        "group_by": None,
        "thread_filter": None,
    }
    rule.update(spec)
    rule["id"] = uuid_or_none(rule["id"]) or str(uuid.uuid4())
    return rule


def _cursor(value: str | None) -> int:
    if value is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(value.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise Unprocessable("cursor is not one this server gave out") from None
    if not isinstance(offset, int) or offset < 0:
        raise Unprocessable("cursor is not one this server gave out")
    return offset


async def list_rules(request: Request, state: State) -> Response:
    if not state.profile.v2_api:
        raise ApiError(404, "Not Found")
    params = request.query_params
    try:
        page_size = int(params.get("page_size", PAGE_DEFAULT))
    except ValueError:
        raise Unprocessable("page_size must be an integer") from None
    if not 1 <= page_size <= PAGE_MAX:
        raise Unprocessable(f"page_size must be between 1 and {PAGE_MAX}")
    ids = set(params.getlist("id"))
    kind = params.get("type")
    wanted = {k: params.get(k) for k in ("project_id", "dataset_id", "evaluator_id")}
    contains = (params.get("name_contains") or "").lower()
    found = [
        r
        for r in state.rules.values()
        if (not ids or r["id"] in ids)
        and all(v is None or str(r.get(k)) == v for k, v in wanted.items())
        and (kind is None or (kind == "PROJECT") == (r.get("project_id") is not None))
        and contains in str(r.get("display_name", "")).lower()
    ]
    found.sort(key=lambda r: (str(r["updated_at"]), r["id"]), reverse=True)
    offset = _cursor(params.get("cursor"))
    following = offset + page_size
    next_cursor = (
        base64.urlsafe_b64encode(json.dumps({"offset": following}).encode()).decode()
        if following < len(found)
        else None
    )
    return JSONResponse({"items": found[offset:following], "next_cursor": next_cursor})
