"""The peer: the obvious Starlette + RQ ingress. `Queue.enqueue(...)` with the body, run in
Starlette's threadpool because redis-py's client RQ uses is synchronous.

Env: REDIS_URL, LSWH_SECRETS (the first one is used).
"""

from __future__ import annotations

import hmac
import os

import redis
from rq import Queue
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET = os.environ["LSWH_SECRETS"].split(",")[0].encode()
QUEUE = Queue("bench-peer", connection=redis.Redis.from_url(os.environ.get("REDIS_URL",
                                                                           "redis://localhost:6379/0")))


async def webhook(request: Request) -> Response:
    given = request.query_params.get("secret", "").encode()
    if not hmac.compare_digest(given, SECRET):
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    body = await request.body()
    job = await run_in_threadpool(QUEUE.enqueue, "workers.jobs.process_delivery", body)
    return JSONResponse({"job_id": job.id}, status_code=202)


async def healthz(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/webhooks/langsmith", webhook, methods=["POST"]),
                        Route("/healthz", healthz)])
