"""Read a request body without ever holding more than the configured limit."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

# uvicorn bounds neither headers nor body; the body at least the app can bound. LangSmith sends
# a whole delivery in well under a second; a client dribbling one in must not hold a connection.
BODY_TIMEOUT_SECONDS = 10.0


class BodyTooLarge(Exception):
    pass


class BadLength(ValueError):
    pass


class BodyTooSlow(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """Refuses by Content-Length before reading, or as soon as a chunked body passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadLength("Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)
