"""The floor: check the secret in constant time, LPUSH the raw body, 202. Nothing else.

No validation, no duplicate check, no job: the least work an ingress that stores a delivery
in Redis can do. Env: REDIS_URL, LSWH_SECRETS (the first one is used), BENCH_FLOOR_POOL:
`default` (redis-py's own pool, one LPUSH per request: the floor ratios are taken against),
`blocking` (a BlockingConnectionPool of 64, as lswh_core.redis uses, to show what it costs) or
`pipelined` (the LPUSHes sent through ingress.autopipeline, one held connection written once per
event-loop turn, as the ingress sends its stores), to show what that technique gives the floor too,
or `none` (no store at all: what Starlette and uvicorn cost before any Redis, a rung of the
ladder that shows where a floor's time goes).
"""

from __future__ import annotations

import hmac
import os

import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingress.autopipeline import AutoPipeline

SECRET = os.environ["LSWH_SECRETS"].split(",")[0].encode()
URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
POOL = os.environ.get("BENCH_FLOOR_POOL", "default")
if POOL == "blocking":
    REDIS = redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool.from_url(URL, max_connections=64))
else:
    REDIS = redis.asyncio.Redis.from_url(URL)
PIPELINE = AutoPipeline(REDIS, budget_seconds=2.0) if POOL == "pipelined" else None


async def webhook(request: Request) -> Response:
    given = request.query_params.get("secret", "").encode()
    if not hmac.compare_digest(given, SECRET):
        return Response(b'{"error": "unauthorized"}', status_code=401, media_type="application/json")
    body = await request.body()
    if PIPELINE is not None:
        await PIPELINE.execute("LPUSH", "bench:floor", body)
    elif POOL != "none":
        await REDIS.lpush("bench:floor", body)
    return Response(b'{"accepted": true}', status_code=202, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/webhooks/langsmith", webhook, methods=["POST"]),
                        Route("/healthz", healthz)])
