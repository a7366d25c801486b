"""The floor: check the secret in constant time, LPUSH the raw body, 202. Nothing else.

No validation, no duplicate check, no job: the least work an ingress that stores a delivery
in Redis can do. Env: REDIS_URL, LSWH_SECRETS (the first one is used).
"""

from __future__ import annotations

import hmac
import os

import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SECRET = os.environ["LSWH_SECRETS"].split(",")[0].encode()
# A blocking pool, so a burst waits for a connection instead of failing "Too many connections".
REDIS = redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
    os.environ.get("REDIS_URL", "redis://localhost:6379/0"), max_connections=64))


async def webhook(request: Request) -> Response:
    given = request.query_params.get("secret", "").encode()
    if not hmac.compare_digest(given, SECRET):
        return Response(b'{"error": "unauthorized"}', status_code=401, media_type="application/json")
    body = await request.body()
    await REDIS.lpush("bench:floor", body)
    return Response(b'{"accepted": true}', status_code=202, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/webhooks/langsmith", webhook, methods=["POST"]),
                        Route("/healthz", healthz)])
