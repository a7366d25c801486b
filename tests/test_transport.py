"""The presigned-URL client (httpx over aiohttp) against a real HTTP server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.support.faults import RecordingServer
from workers.s3 import fetch_json
from workers.transport import AiohttpTransport, PublicOnlyResolver

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


class FixedResolver(AbstractResolver):
    """Answers every name with the given addresses, like a DNS server would."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
                for a in self.addresses]

    async def close(self) -> None:
        pass


def resolve(resolver: PublicOnlyResolver, host: str) -> list[str]:
    return [r["host"] for r in asyncio.run(resolver.resolve(host, 443))]


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "192.168.0.9", "::1"])
def test_allowed_name_resolving_inward_is_refused(address: str) -> None:
    with pytest.raises(OSError, match="internal"):
        resolve(PublicOnlyResolver((), FixedResolver(address)), "bucket.s3.amazonaws.com")


def test_internal_addresses_are_dropped_from_a_mixed_answer() -> None:
    assert resolve(PublicOnlyResolver((), FixedResolver("10.0.0.1", "52.216.1.2")), "b.s3.amazonaws.com") \
        == ["52.216.1.2"]


def test_exactly_listed_host_may_resolve_inward() -> None:
    assert resolve(PublicOnlyResolver(("minio.internal",), FixedResolver("10.0.0.7")), "MINIO.internal") \
        == ["10.0.0.7"]


def test_localhost_by_name_is_fetched_only_when_listed_exactly(server: RecordingServer) -> None:
    async def go(exact: tuple[str, ...]) -> object:
        transport = AiohttpTransport(max_connections=2, exact_hosts=exact)
        async with httpx.AsyncClient(transport=transport) as client:
            return await fetch_json(client, f"http://localhost:{server.port}/named", "inputs")

    from workers.errors import RunError

    hits = len(server.hits)
    with pytest.raises(RunError):
        asyncio.run(go(()))
    assert len(server.hits) == hits
    assert asyncio.run(go(("localhost",))) == {"from": "test-server"}
