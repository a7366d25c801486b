"""Read a request body without ever holding more than the configured limit."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect
from starlette.types import Receive

# uvicorn bounds neither headers nor body; the body at least the app can bound. LangSmith sends
# a whole delivery in well under a second; a client dribbling one in must not hold a connection.
BODY_TIMEOUT_SECONDS = 10.0


class BodyTooLarge(Exception):
    pass


class BadLength(ValueError):
    pass


class BodyTooSlow(Exception):
    pass


async def read_limited(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """Refuses by Content-Length (the header's raw value) before reading, or as soon as a
    chunked body passes the limit. Reads the ASGI messages itself: Request.stream() is an async
    generator, a frame and a hop per chunk."""
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadLength("Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            while True:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect, as Request.stream() treats it
                    raise ClientDisconnect
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)
