"""The presigned-URL client (httpx over aiohttp) against a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support.faults import RecordingServer
from workers.s3 import fetch_json
from workers.transport import AiohttpTransport

SIGNED_PATH = "/runs/a%2Bb%20c%3D/inputs.json?X-Amz-Credential=AKIA%2F20240405%2Fus-west-2&X-Amz-Signature=ab%2Bc"


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    yield recording
    recording.stop()


def fetch(url: str) -> object:
    async def go() -> object:
        async with httpx.AsyncClient(transport=AiohttpTransport(max_connections=4)) as client:
            return await fetch_json(client, url, "inputs")

    return asyncio.run(go())


def test_presigned_url_is_sent_byte_for_byte(server: RecordingServer) -> None:
    """Re-quoting a presigned URL (as yarl does by default) would break its signature."""
    assert fetch(server.url + SIGNED_PATH) == {"from": "test-server"}
    assert server.hits[-1] == SIGNED_PATH


def test_refused_connection_is_a_transient_error() -> None:
    from tests.support.procs import free_port
    from workers.errors import RunError

    with pytest.raises(RunError) as info:
        fetch(f"http://127.0.0.1:{free_port()}/x")
    assert info.value.transient
    assert "127.0.0.1" not in info.value.reason
