"""The presigned-object fetcher (workers/fetch/s3.py ObjectStore, aiohttp) against real HTTP servers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.support.faults import RecordingServer
from tests.support.procs import RedisServer
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run
from workers.errors import RunError
from workers.fetch.s3 import ObjectStore, ObjectUnusable, PublicOnlyResolver

SIGNED_PATH = "/runs/a%2Bb%20c%3D/inputs.json?X-Amz-Credential=AKIA%2F20240405%2Fus-west-2&X-Amz-Signature=ab%2Bc"


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    yield recording
    recording.stop()


def fetch_via(url: str, exact: tuple[str, ...] = ()) -> object:
    async def go() -> object:
        store = ObjectStore(max_connections=2, exact_hosts=exact)
        try:
            return (await store.fetch_json(url, "inputs"))[0]
        finally:
            await store.close()

    return asyncio.run(go())


def fetch(url: str) -> object:
    # Listed exactly, as a test object store on loopback must be (LSWH_S3_ALLOWED_HOSTS).
    return fetch_via(url, exact=("127.0.0.1",))


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
    url = f"http://localhost:{server.port}/named"
    hits = len(server.hits)
    with pytest.raises(ObjectUnusable):
        fetch_via(url)
    assert len(server.hits) == hits
    assert fetch_via(url, exact=("localhost",)) == {"from": "test-server"}


# --- what a failure means, with the real transport ----------------------------------------------


def inward_name() -> str:
    """A host name (not an address, not `localhost`) that the system resolves to loopback or a
    private address, as a rebinding DNS name would: the machine's own name usually is one."""
    for name in (socket.gethostname(), socket.getfqdn()):
        if not name or "localhost" in name:
            continue
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)}
        except OSError:
            continue
        if addresses and not any(ipaddress.ip_address(str(a)).is_global for a in addresses):
            return name
    pytest.skip("no host name here resolves to an internal address")


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "[::ffff:127.0.0.1]"])
def test_numeric_spellings_of_loopback_are_not_usable_and_never_connected(server: RecordingServer,
                                                                         host: str) -> None:
    hits = len(server.hits)
    with pytest.raises(ObjectUnusable):
        fetch_via(f"http://{host}:{server.port}/numeric")
    assert len(server.hits) == hits


def test_allowed_looking_name_resolving_inward_is_not_usable_and_never_connected(server: RecordingServer) -> None:
    hits = len(server.hits)
    with pytest.raises(ObjectUnusable, match="internal address"):
        fetch_via(f"http://{inward_name()}:{server.port}/rebound")
    assert len(server.hits) == hits


class ResettingServer:
    """Answers every request with a 200 and part of its body (or nothing at all), then resets
    the connection (RST, not FIN), as a load balancer or a dying S3 node does."""

    def __init__(self, send_headers: bool) -> None:
        self.send_headers = send_headers
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.requests += 1
                if self.send_headers:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 100000\r\n\r\n" + b'{"pad": "' + b"x" * 20_000)
                    time.sleep(0.05)  # let the client read the headers and start on the body
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def stop(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("send_headers", [True, False], ids=["mid-body", "before-headers"])
def test_connection_reset_mid_response_is_transient(send_headers: bool) -> None:
    resetting = ResettingServer(send_headers)
    try:
        with pytest.raises(RunError) as info:
            fetch_via(f"http://127.0.0.1:{resetting.port}/k?X-Amz-Signature=secret-sig", exact=("127.0.0.1",))
    finally:
        resetting.stop()
    assert resetting.requests >= 1
    assert info.value.transient
    assert "secret-sig" not in info.value.reason


# --- end to end: a blocked address falls back to the API ----------------------------------------


@pytest.fixture(scope="module")
def globbing(redis_server: RedisServer, standin: StandIn, server: RecordingServer) -> Iterator[Pipeline]:
    """Allows any host on the recording server's port by glob: names resolving inward included."""
    allowed = f"http://127.0.0.1:{standin.port},http://*:{server.port}"
    stack = Pipeline(redis_server, standin, db=13, LSWH_S3_ALLOWED_HOSTS=allowed)
    yield stack
    stack.stop()


def test_run_whose_object_host_resolves_inward_is_read_through_the_api(
    globbing: Pipeline, standin: StandIn, server: RecordingServer
) -> None:
    urls = [f"http://{inward_name()}:{server.port}/rebound?X-Amz-Signature=s", f"http://127.1:{server.port}/short"]
    runs = []
    for url in urls:
        run = fresh_run(inputs_s3_urls={"ROOT": {"presigned_url": url, "s3_url": "s3://b/k"}}, outputs={"a": 1})
        standin.add_runs([{**run, "inputs": {"from": "api"}}])
        runs.append(run)
    hits = len(server.hits)
    assert globbing.post(delivery(runs)).status_code == 202
    examples = globbing.wait_examples([r["id"] for r in runs], timeout=60)
    assert [examples[r["id"]][0]["inputs"] for r in runs] == [{"from": "api"}] * len(runs)
    assert len(server.hits) == hits
    assert globbing.failed_jobs() == []
