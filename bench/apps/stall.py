"""A raw ASGI app that answers every POST with 202 and can stall on purpose: the load
generators' own yardstick, with no Redis and no framework between the socket and the answer.

It stalls by blocking its event loop (`time.sleep`), the way a GC pause or a slow synchronous
call stalls a real server: every request that arrives meanwhile waits. A generator without
coordinated omission charges that wait to each request scheduled during it.

Env: BENCH_STALL_AT (the Nth POST, 1-based, stalls once), BENCH_STALL_EVERY (every Nth POST
stalls), BENCH_STALL_MS (how long, default 200). `GET /stats` answers
{"posts": n, "distinct_run_ids": m}: the run id is `runs[0].id` of the docs-shaped body.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

STALL_AT = int(os.environ.get("BENCH_STALL_AT", "0"))
STALL_EVERY = int(os.environ.get("BENCH_STALL_EVERY", "0"))
STALL_SECONDS = float(os.environ.get("BENCH_STALL_MS", "200")) / 1000

posts = 0
run_ids: set[str] = set()


async def _reply(send: Callable[[Message], Awaitable[None]], status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _run_id(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["runs"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


async def app(scope: Scope, receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    global posts
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        if scope["path"] == "/stats":
            await _reply(send, 200, {"posts": posts, "distinct_run_ids": len(run_ids)})
        else:
            await _reply(send, 200, {"ok": True})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    posts += 1
    if (STALL_AT and posts == STALL_AT) or (STALL_EVERY and posts % STALL_EVERY == 0):
        time.sleep(STALL_SECONDS)
    run_id = _run_id(b"".join(chunks))
    duplicate = run_id in run_ids
    if run_id is not None:
        run_ids.add(run_id)
    await _reply(send, 202, {"run_id": run_id, "duplicate": duplicate})
