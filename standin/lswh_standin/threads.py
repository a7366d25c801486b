"""A thread rule's webhook delivery, as the stand-in assumes it.

ASSUMPTION, NOT DOCUMENTED: LangSmith's docs say a rule can match whole threads (docs PR
langchain-ai/docs#5559, "A rule matches either individual runs or entire threads"; SDK
types/rule.py `group_by` THREAD_ID | TRAJECTORY_ID), but no source we could find documents what
such a rule's webhook sends. The stand-in assumes the runs payload's envelope with a list of thread
objects in place of `runs`:

    {"rule_id", "start_time", "end_time", "threads": [{"thread_id", "project_id"}, ...]}

The pipeline does not bet on it: it decides by the rule's `group_by`, reads every thread's runs
through the API, and logs the key names of each thread rule's first delivery so the real shape
becomes known (docs/langsmith.md, "Thread rules and other delivery shapes"). Replace this once it is.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.state import BadRequest, State, iso, json_body


def thread_delivery(rule: dict[str, Any], thread_ids: list[str], start_time: str, end_time: str) -> dict[str, Any]:
    """The assumed body (see the module docstring)."""
    threads = [{"thread_id": thread_id, **({"project_id": rule["project_id"]} if rule.get("project_id") else {})}
               for thread_id in thread_ids]
    return {"rule_id": rule["id"], "start_time": start_time, "end_time": end_time, "threads": threads}


async def admin_thread_delivery(request: Request, state: State) -> Response:
    """`{"rule_id", "thread_ids": [...]}` -> the body a thread rule's webhook would send (assumed)."""
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("thread_ids"), list):
        raise BadRequest('body must be {"rule_id": ..., "thread_ids": [...]}')
    rule = state.rules.get(str(body.get("rule_id")))
    if rule is None:
        raise BadRequest("no such rule (POST /_admin/rules first)")
    if str(rule.get("group_by") or "").upper() != "THREAD_ID":
        raise BadRequest("the rule does not group by THREAD_ID")
    now = iso()
    return JSONResponse(thread_delivery(rule, [str(t) for t in body["thread_ids"]], body.get("start_time") or now,
                                        body.get("end_time") or now))
