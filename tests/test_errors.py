"""Failures are classified by what they are, with the errors the real clients raise."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx2
import pytest
from langsmith import AsyncLangsmith, Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from workers.errors import classify


def _v2_client_answering(status: int, headers: dict[str, str] | None = None) -> AsyncLangsmith:
    """The SDK's generated client, retries off as the worker builds it, over an in-process app."""

    async def query(request: Request) -> JSONResponse:
        return JSONResponse({"detail": "no"}, status_code=status, headers=headers)

    app = Starlette(routes=[Route("/api/v2/runs/query", query, methods=["POST"])])
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://ls.test")
    return AsyncLangsmith(api_key="k", base_url="http://ls.test", max_retries=0, http_client=http)


def _v2_error(status: int, headers: dict[str, str] | None = None) -> BaseException:
    async def run() -> BaseException:
        client = _v2_client_answering(status, headers)
        try:
            async for _ in client.runs.query_v2(project_ids=["p"], ids=["r"]):
                pass
        except Exception as exc:
            return exc
        finally:
            await client.close()
        raise AssertionError("no error")

    return asyncio.run(run())


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_v2_client_transient_statuses_are_transient(status: int) -> None:
    error = classify(_v2_error(status), "reading runs")
    assert error.transient, error.reason
    assert str(status) in error.reason


def test_v2_client_429_is_transient_not_permanent() -> None:
    # The generated client raises langsmith.RateLimitError, which is not a LangSmithError.
    exc = _v2_error(429)
    assert type(exc).__name__ == "RateLimitError"
    assert classify(exc, "reading runs").transient


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_v2_client_refusals_are_permanent(status: int) -> None:
    assert not classify(_v2_error(status), "reading runs").transient


def test_v2_client_retry_after_is_kept_for_rescheduling() -> None:
    assert classify(_v2_error(503, {"Retry-After": "42"}), "reading runs").retry_after == 42


def test_v2_client_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def run() -> BaseException:
        client = AsyncLangsmith(api_key="k", base_url=f"http://127.0.0.1:{port}", max_retries=0)
        try:
            async for _ in client.runs.query_v2(project_ids=["p"]):
                pass
        except Exception as exc:
            return exc
        finally:
            await client.close()
        raise AssertionError("no error")

    assert classify(asyncio.run(run()), "reading runs").transient


@pytest.fixture
def resetting_server() -> Iterator[str]:
    """Answers every request with a 200 that promises 1,000 bytes and hangs up after 10."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                             b'{"runs": [')
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def test_v1_reset_mid_response_is_transient(resetting_server: str) -> None:
    # The SDK wraps the broken read in a plain LangSmithError; the cause says what happened.
    client = Client(api_url=resetting_server, api_key="k", auto_batch_tracing=False, info={})
    with pytest.raises(Exception) as caught:
        client.request_with_retries("POST", "/runs/query", request_kwargs={"data": b"{}"})
    error = classify(caught.value, "reading runs")
    assert error.transient, error.reason
