"""The ingress ASGI app: 401, 413, 400, 503, 202, in that order (docs/operations.md, "HTTP endpoints")."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import redis.exceptions
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ingress.auth import bearer_secret, is_authorized, query_secret
from ingress.body import BODY_TIMEOUT_SECONDS, BadLength, BodyTooLarge, BodyTooSlow, read_limited
from ingress.enqueue import DeliveryQueue
from ingress.metrics import IngressMetrics
from ingress.parsing import BodyChecker, ParserUnavailable
from ingress.payload import BadDelivery
from lswh_core.logs import TRUSTED
from lswh_core.redact import install_log_redaction
from lswh_core.redis import async_redis
from lswh_core.settings import Settings

log = logging.getLogger("lswh.ingress")

RETRY_AFTER_SECONDS = "1"
WEBHOOK_PATH = "/webhooks/langsmith"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def unavailable(message: str) -> JSONResponse:
    return error(503, message, {"Retry-After": RETRY_AFTER_SECONDS})


# The outcome counted and logged for each answer to a delivery (lswh_core.metrics.DELIVERY_OUTCOMES).
_OUTCOMES = {401: "unauthorized", 413: "too_large", 400: "bad_request", 408: "timeout", 503: "unavailable"}
_JSON = (b"content-type", b"application/json")
_RETRY_AFTER = ((b"retry-after", RETRY_AFTER_SECONDS.encode()),)
_CLOSE = ((b"connection", b"close"),)

Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]  # status, JSON body, extra headers


def _answer(status: int, content: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    return status, orjson.dumps(content), headers


def _refuse(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    return _answer(status, {"error": message}, headers)


class _Delivery:
    """What the handler learnt on the way, for the count and the line (plain slots: Starlette's
    request.state costs a Python-level __setattr__ per field)."""

    __slots__ = ("body_bytes", "delivery_id", "duplicate", "error", "runs")

    def __init__(self) -> None:
        self.body_bytes: int | None = None
        self.runs = 0
        self.delivery_id: str | None = None
        self.duplicate = False
        self.error: str | None = None


class Webhook:
    """POST /webhooks/langsmith as a plain ASGI app. It is the hot path: answered straight from
    the ASGI messages, it skips Starlette's Request and Response objects and its two exception
    middlewares, which cost about a fifth of the ingress's CPU per delivery (py-spy under
    `wrk -c32`). Ingress sends it every POST to its path; Starlette routes it too (same answers),
    for any request that does not take the shortcut.

    Counts, times and logs each delivery: one line per delivery, in place of uvicorn's access log
    (which prints the query string, the secret)."""

    def __init__(self, state: State) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        note = _Delivery()
        try:
            status, body, headers = await self._answer(scope, receive, note)
        except ClientDisconnect:
            log.warning("delivery abandoned: the client disconnected before its body was read",
                        extra={"bytes": note.body_bytes, TRUSTED: True})
            return
        except Exception as exc:
            # What Starlette's ServerErrorMiddleware would do: a 500, the class name and the
            # traceback in the log (never the exception's text: it may quote the request).
            log.error("unhandled %s on %s", type(exc).__name__, WEBHOOK_PATH, exc_info=True)
            status, body, headers = _refuse(500, "internal error")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), _JSON, *headers]})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - started
        if status == 202:
            outcome = "duplicate" if note.duplicate else "accepted"
        else:
            outcome = _OUTCOMES.get(status, "bad_request")
        self.state.metrics.delivery(outcome, seconds, note.body_bytes, note.runs)
        # Every field is ours (a fixed word, our hex id, numbers, an exception's class name): no
        # redaction needed on this hot path.
        extra = {"outcome": outcome, "delivery_id": note.delivery_id, "runs": note.runs, "bytes": note.body_bytes,
                 "ms": round(seconds * 1000, 2), "error": note.error, TRUSTED: True}
        log.log(logging.INFO if status == 202 else logging.WARNING, "delivery %s", outcome, extra=extra)

    async def _answer(self, scope: Scope, receive: Receive, note: _Delivery) -> Answer:
        state = self.state
        authorization, content_length = _headers(scope["headers"])
        candidates = (*query_secret(scope["query_string"]), *bearer_secret(authorization))
        if not is_authorized(candidates, state.secrets):
            return _refuse(401, "missing or wrong secret")
        settings: Settings = state.settings
        try:
            body = await read_limited(receive, content_length, settings.max_body_bytes)
        except BodyTooLarge:
            return _refuse(413, f"body is larger than LSWH_MAX_BODY_BYTES ({settings.max_body_bytes} bytes)")
        except BadLength as exc:
            return _refuse(400, str(exc))
        except BodyTooSlow:
            return _refuse(408, f"body not received within {BODY_TIMEOUT_SECONDS:g} s", _CLOSE)
        note.body_bytes = len(body)
        try:
            delivery_id, runs, threads = await state.checker.check(body)  # large bodies off the event loop
        except BadDelivery as exc:
            return _refuse(400, str(exc))
        except ParserUnavailable:
            return _refuse(503, "parser restarting, retry later", _RETRY_AFTER)
        note.delivery_id, note.runs = delivery_id, runs or 0
        try:
            # A body without runs (a thread rule's, or a shape not known yet) is kept as long as a
            # failed job: a replay after an upgrade must still find it.
            stored = await state.queue.store(body, delivery_id, runs or 0, keep_long=runs is None)
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            note.error = type(exc).__name__  # logged on the delivery's line
            return _refuse(503, "queue unavailable, retry later", _RETRY_AFTER)
        note.duplicate = stored.duplicate
        if threads is not None:
            return _answer(202, {"delivery_id": delivery_id, "runs": runs or 0, "duplicate": stored.duplicate,
                                 "threads": threads})
        return _answer(202, {"delivery_id": delivery_id, "runs": runs or 0, "duplicate": stored.duplicate})


class Ingress:
    """The ASGI app uvicorn serves: a delivery goes straight to Webhook, anything else
    (lifespan, health, metrics, a wrong method) to Starlette."""

    def __init__(self, starlette: Starlette, webhook: Webhook) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self.router = starlette.router
        self._webhook = webhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK_PATH and scope["method"] == "POST":
            await self._webhook(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)


def _headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The first Authorization and Content-Length, in one pass (ASGI names are lower case)."""
    authorization = content_length = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:
                authorization = value
        elif name == b"content-length" and content_length is None:
            content_length = value
    return authorization, content_length


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await asyncio.wait_for(request.app.state.redis.ping(), 1.0)
    except (TimeoutError, redis.exceptions.RedisError, OSError):
        return unavailable("redis unavailable")
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus text. The shipped TLS proxy does not forward it: scrape the port directly."""
    body = await request.app.state.metrics.exposition(request.app.state.redis)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail, exc.headers)  # a 405's Allow


async def server_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
    return error(500, "internal error")


def create_app(settings: Settings | None = None) -> Ingress:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        install_log_redaction()
        client = async_redis(settings.redis_url)
        app.state.redis = client
        app.state.queue = DeliveryQueue(client, settings)
        await app.state.checker.start()
        # What start-up built (~43k objects: modules, RQ, redis-py, Starlette) lives as long as
        # the process. Left to the collector, every full collection walks it all again (~25 ms
        # on a busy core, a stall every delivery in flight waits out): frozen, collections walk
        # only what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            app.state.checker.close()
            await app.state.queue.aclose()
            await client.aclose()

    state = State()
    webhook = Webhook(state)
    app = Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state = state
    app.state.settings = settings
    app.state.metrics = IngressMetrics()
    app.state.checker = BodyChecker()
    app.state.secrets = tuple(s.encode() for s in settings.secrets)
    return Ingress(app, webhook)


app = create_app()
