"""Abuse: hostile bodies, slow clients, wrong secrets, presigned URLs that try to reach inside.
Each gets a clear 4xx (or is never fetched), nothing is stored, and the process stays healthy."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lswh_core.settings import Settings
from tests.support.faults import RecordingServer, failed_run_job, warm_up
from tests.support.procs import ROOT, RedisServer
from tests.support.stack import SECRET, Pipeline, StandIn, delivery, fresh_run

LIMIT = 65_536


@pytest.fixture(scope="module")
def gate(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    """An ingress alone (no workers: nothing here should ever reach one), with a small limit."""
    stack = Pipeline(redis_server, standin, db=7, workers=0, LSWH_MAX_BODY_BYTES=str(LIMIT))
    stack.redis.flushdb()
    yield stack
    stack.stop()


def send(
    stack: Pipeline,
    content: bytes | Iterator[bytes],
    *,
    secret: str | None = SECRET,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    params = {"secret": secret} if secret is not None else None
    return stack.http.post("/webhooks/langsmith", content=content, params=params, headers=headers)


def assert_refused(stack: Pipeline, response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and "\n" not in response.json()["error"]


def assert_healthy(stack: Pipeline) -> None:
    assert stack.http.get("/healthz").status_code == 200
    assert stack.http.get("/readyz").status_code == 200
    ok = send(stack, json.dumps(delivery([fresh_run()])).encode())
    assert ok.status_code == 202, ok.text


def rss(stack: Pipeline) -> int:
    return int(psutil.Process(stack.ingress.pid).memory_info().rss)


# --- fuzzing the body ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
RUN_FIELDS = ("id", "inputs", "outputs", "inputs_s3_urls", "outputs_s3_urls", "name", "trace_id")


@st.composite
def delivery_with_a_wrong_field(draw: st.DrawFn) -> bytes:
    """A real delivery with one field, at the top or in a run, replaced by any JSON value."""
    body = delivery([fresh_run(), fresh_run()])
    where = draw(st.sampled_from(["rule_id", "runs", "run", *RUN_FIELDS]))
    value = draw(json_values)
    if where in ("rule_id", "runs"):
        body[where] = value
    elif where == "run":
        body["runs"][draw(st.integers(0, 1))] = value
    else:
        body["runs"][draw(st.integers(0, 1))][where] = value
    return json.dumps(body).encode()


def nested(depth: int) -> bytes:
    return b'{"runs": [], "x": ' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def hostile_json(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["deep", "huge-int", "huge-float", "bad-utf8", "lone-surrogate", "constant"]))
    if kind == "deep":
        return nested(draw(st.integers(256, 5000)))  # the object is one level more
    if kind == "huge-int":
        digits = draw(st.integers(20, 5000))  # 10**19 < 2**64 < 10**20
        return b'{"runs": [], "n": ' + draw(st.sampled_from([b"", b"-"])) + b"9" * digits + b"}"
    if kind == "huge-float":
        return b'{"runs": [], "f": 1e' + str(draw(st.integers(309, 100_000))).encode() + b"}"
    if kind == "bad-utf8":
        raw = draw(st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b)))
        return b'{"runs": [{"id": "' + raw + b'"}]}'
    if kind == "lone-surrogate":
        return b'{"runs": [{"id": "\\ud800"}]}'
    return b'{"runs": [], "x": ' + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])) + b"}"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _int64(digits: str) -> int:
    if abs(int(digits)) >= 2**64:
        raise ValueError("huge")
    return int(digits)


def _depth(value: Any) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(c) for c in children), default=0)
    return 0


def _is_delivery(body: bytes) -> bool:
    """The spec's 400 rules, written independently of the ingress: the oracle for fuzzing."""
    try:
        doc = json.loads(body.decode(), parse_constant=_no_constant, parse_int=_int64)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict) or _depth(doc) > 256:
        return False
    if doc.get("rule_id") is not None and not isinstance(doc["rule_id"], str):
        return False
    if "runs" not in doc:
        return True  # a thread rule's delivery or a shape not known yet: kept, failed visibly later
    runs = doc.get("runs")
    if not isinstance(runs, list):
        return False
    for run in runs:
        if not isinstance(run, dict) or not isinstance(run.get("id"), str) or not run["id"].strip():
            return False
        for name in ("inputs", "outputs", "inputs_s3_urls", "outputs_s3_urls"):
            if run.get(name) is not None and not isinstance(run[name], dict):
                return False
    return True


bodies = st.binary(max_size=4096) | json_values.map(lambda v: json.dumps(v).encode()) | delivery_with_a_wrong_field()


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_fuzzed_bodies_get_202_or_a_clear_400_and_store_nothing_else(gate: Pipeline, body: bytes) -> None:
    before = gate.redis.dbsize()
    response = send(gate, body)
    if _is_delivery(body):
        assert response.status_code == 202, (response.status_code, response.text, body[:300])
    else:
        assert_refused(gate, response, 400)
        assert gate.redis.dbsize() == before


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=hostile_json())
def test_deep_huge_or_invalid_json_is_400(gate: Pipeline, body: bytes) -> None:
    before = gate.redis.dbsize()
    assert_refused(gate, send(gate, body), 400)
    assert gate.redis.dbsize() == before


def test_ingress_survives_the_fuzzing_with_memory_bounded(gate: Pipeline) -> None:
    """Runs after the fuzzing above, then pushes the largest bodies through many times."""
    assert gate.ingress.alive()
    start = rss(gate)
    big = nested(LIMIT // 2 - 20)  # deep as the limit allows
    for _ in range(50):
        assert send(gate, big).status_code == 400
        assert send(gate, b"[" * LIMIT + b"x" * 10).status_code == 413
    assert rss(gate) - start < 64 * 1024 * 1024
    assert_healthy(gate)


# --- size limit -------------------------------------------------------------------------------------


def padded(size: int) -> bytes:
    body = json.dumps(delivery([fresh_run()])).encode()
    return body + b" " * (size - len(body))


def chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_body_at_the_limit_is_accepted_and_one_byte_over_refused(gate: Pipeline) -> None:
    assert send(gate, padded(LIMIT)).status_code == 202
    before = gate.redis.dbsize()
    assert_refused(gate, send(gate, padded(LIMIT + 1)), 413)
    assert gate.redis.dbsize() == before


def test_chunked_body_without_content_length_at_and_over_the_limit(gate: Pipeline) -> None:
    assert send(gate, chunked(padded(LIMIT))).status_code == 202
    before = gate.redis.dbsize()
    assert_refused(gate, send(gate, chunked(padded(LIMIT + 1))), 413)
    assert gate.redis.dbsize() == before


def _buffer_max(name: str) -> int:
    """The most a TCP socket buffer autotunes to here (the third figure of net.ipv4.tcp_wmem/rmem)."""
    try:
        return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 32 * 1024 * 1024  # not Linux: a generous bound that still is not an endless body


def test_endless_chunked_body_is_cut_off_at_the_limit(gate: Pipeline) -> None:
    """The answer comes while the client is still sending: the body is never read whole."""
    with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as sock:
        sock.sendall(
            f"POST /webhooks/langsmith?secret={SECRET} HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.setblocking(False)
        chunk = b"2000\r\n" + b" " * 0x2000 + b"\r\n"
        sent, answer = 0, b""
        deadline = time.monotonic() + 20
        while b"\r\n" not in answer and time.monotonic() < deadline:
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.01)
            try:
                answer += sock.recv(4096)
            except BlockingIOError:
                pass
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        # What the kernel's socket buffers can hold on both ends (autotuned up to their maxima),
        # not the endless body: a server reading it all would let ~20 s of sending through.
        assert sent < LIMIT + _buffer_max("tcp_wmem") + _buffer_max("tcp_rmem"), sent
    assert_healthy(gate)


def test_huge_declared_content_length_is_refused_before_reading(gate: Pipeline) -> None:
    with socket.create_connection(("127.0.0.1", gate.port), timeout=5) as sock:
        sock.sendall(
            f"POST /webhooks/langsmith?secret={SECRET} HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 10000000000\r\n\r\n{".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


# --- slow clients -------------------------------------------------------------------------------------


def test_clients_dribbling_headers_or_body_do_not_hold_the_ingress(gate: Pipeline) -> None:
    slow = []
    try:
        for i in range(100):
            sock = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
            if i % 2:
                sock.sendall(f"POST /webhooks/langsmith?secret={SECRET} HTTP/1.1\r\nHost: x\r\nX-Slow:".encode())
            else:
                sock.sendall(
                    f"POST /webhooks/langsmith?secret={SECRET} HTTP/1.1\r\nHost: x\r\n"
                    'Content-Length: 1000\r\n\r\n{"runs"'.encode()
                )
            slow.append(sock)
        for _ in range(3):
            for sock in slow:
                sock.sendall(b" ")
            assert_healthy(gate)
            # Order, not a time bound: answered while every slow client is still held open.
            assert not [sock for sock in slow if answered(sock)]
            time.sleep(0.5)
    finally:
        for sock in slow:
            sock.close()


def answered(sock: socket.socket) -> bool:
    """The server wrote to or closed this connection (readable now; nothing read, no waiting)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


BODY_TIMEOUT = 10  # what the ingress allows for reading a body (proposed: ingress/body.py)


def test_client_dribbling_its_body_is_answered_408_and_cut_off(gate: Pipeline) -> None:
    """uvicorn bounds neither the header nor the body phase; the body is read by the app, which
    can bound it. (Headers: the TLS proxy's job, deploy/nginx.conf `client_header_timeout`.)"""
    with socket.create_connection(("127.0.0.1", gate.port), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(
            f"POST /webhooks/langsmith?secret={SECRET} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        started = time.monotonic()
        sock.setblocking(False)
        answer = b""
        while not answer and time.monotonic() - started < BODY_TIMEOUT + 5:
            try:
                sock.send(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.5)
            try:
                answer = sock.recv(4096)
            except BlockingIOError:
                pass
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]  # within the loop's bounded wait


def test_the_tls_proxy_bounds_what_uvicorn_cannot() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    for setting in (
        "client_header_timeout 10s;",
        "client_body_timeout 10s;",
        "client_max_body_size 25m;",
        "proxy_request_buffering on;",
    ):
        assert setting in conf


# --- secrets -------------------------------------------------------------------------------------------

WRONG_SECRETS = [
    "",
    "wrong",
    SECRET + "x",
    SECRET[:-1],
    SECRET.upper(),
    " " + SECRET,
    "x" * 5000,
    SECRET * 100,
    "sécret-✓",
    "\x00",
    SECRET + "\x00",
    "%00",
    "a,",
]


def raw_status(port: int, query: str = "", authorization: bytes | None = None) -> int:
    """POST a delivery with header bytes httpx would refuse to send (NUL, trailing space)."""
    body = json.dumps(delivery([fresh_run()])).encode()
    head = f"POST /webhooks/langsmith{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + b"\r\n" + body)
        answer = sock.recv(4096)
    return int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize("secret", WRONG_SECRETS)
def test_wrong_secrets_are_401_by_query_or_bearer(gate: Pipeline, secret: str) -> None:
    body = json.dumps(delivery([fresh_run()])).encode()
    before = gate.redis.dbsize()
    assert_refused(gate, send(gate, body, secret=secret), 401)
    if not secret.startswith(" "):  # "Bearer  S": RFC 7235 allows several spaces before S
        # A header cannot hold NUL; whatever the server makes of one, it is refused.
        status = raw_status(gate.port, authorization=b"Bearer " + secret.encode())
        assert status in (400, 401)
    assert gate.redis.dbsize() == before


def test_other_authorization_schemes_are_401(gate: Pipeline) -> None:
    for value in (f"Basic {SECRET}", SECRET, "Bearer", "Bearer ", f"Token {SECRET}", f"Bearer{SECRET}"):
        assert raw_status(gate.port, authorization=value.encode()) == 401, value


def test_empty_entry_in_secrets_is_not_a_secret(redis_server: RedisServer, standin: StandIn) -> None:
    assert Settings.from_env({"LSWH_SECRETS": "a,"}).secrets == ("a",)
    assert Settings.from_env({"LSWH_SECRETS": " , ,"}).secrets == ()
    stack = Pipeline(redis_server, standin, db=7, workers=0, LSWH_SECRETS="a,")
    try:
        assert raw_status(stack.port, "?secret=") == 401
        assert raw_status(stack.port, "?secret") == 401
        assert raw_status(stack.port, "?secret=&secret=a") == 401  # the first one counts
        assert raw_status(stack.port, authorization=b"Bearer ") == 401
        assert raw_status(stack.port, authorization=b"Bearer  ") == 401
        assert raw_status(stack.port) == 401
        assert raw_status(stack.port, "?secret=a") == 202
    finally:
        stack.stop()


# --- SSRF -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary() -> Iterator[RecordingServer]:
    """Listed only through a glob: being loopback, it must never be reached."""
    server = RecordingServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def listed() -> Iterator[RecordingServer]:
    """Listed exactly, so allowed: answers JSON, or an endless object at /endless."""
    server = RecordingServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fetcher(
    redis_server: RedisServer, standin: StandIn, canary: RecordingServer, listed: RecordingServer
) -> Iterator[Pipeline]:
    allowed = f"http://127.0.0.1:{standin.port},http://127.0.0.*:{canary.port},http://127.0.0.1:{listed.port}"
    stack = Pipeline(redis_server, standin, db=9, LSWH_S3_ALLOWED_HOSTS=allowed)
    warm_up(stack)
    yield stack
    stack.stop()


def with_inputs_url(standin: StandIn, url: str) -> dict[str, Any]:
    """A run whose inputs are only at `url`; the API has them too, as {"from": "api"}."""
    run = fresh_run(inputs_s3_urls={"ROOT": {"presigned_url": url, "s3_url": "s3://b/k"}}, outputs={"a": 1})
    standin.add_runs([{**run, "inputs": {"from": "api"}}])
    return run


def test_presigned_urls_that_reach_elsewhere_are_never_fetched(
    fetcher: Pipeline, standin: StandIn, canary: RecordingServer, listed: RecordingServer
) -> None:
    c, s = canary.port, standin.port
    redirecting = standin.put_object({"from": "s3"}, redirect_to=f"http://127.0.0.1:{c}/redirected")
    urls = [
        f"http://127.0.0.1:{c}/loopback-matched-by-a-glob-only",
        f"http://localhost:{c}/localhost",
        f"http://[::1]:{c}/ipv6-loopback",
        f"http://127.0.0.1:{s}@127.0.0.1:{c}/userinfo-trick",
        f"http://127.0.0.1:{s}:x@127.0.0.1:{c}/userinfo-trick-2",
        f"https://127.0.0.1:{c}/wrong-scheme-for-the-entry",
        f"ftp://127.0.0.1:{c}/ftp",
        f"gopher://127.0.0.1:{c}/_gopher",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        f"https://bucket.s3.amazonaws.com.127.0.0.1.nip.io:{c}/lookalike",
        redirecting,
    ]
    runs = [with_inputs_url(standin, url) for url in urls]
    control = fresh_run(inputs_s3_urls={"ROOT": {"presigned_url": f"{listed.url}/ok"}}, outputs={"a": 1})
    assert fetcher.post(delivery([*runs, control])).status_code == 202
    examples = fetcher.wait_examples([r["id"] for r in [*runs, control]])
    assert examples[control["id"]][0]["inputs"] == {"from": "test-server"}  # servers are reachable
    assert [examples[r["id"]][0]["inputs"] for r in runs] == [{"from": "api"}] * len(runs)
    assert canary.hits == []


def test_user_info_on_an_allowed_host_is_not_fetched_either(fetcher: Pipeline, standin: StandIn) -> None:
    url = standin.put_object({"from": "s3"})
    run = with_inputs_url(standin, url.replace("http://", "http://user:pass@", 1))
    assert fetcher.post(delivery([run])).status_code == 202
    assert fetcher.wait_examples([run["id"]])[run["id"]][0]["inputs"] == {"from": "api"}


def test_object_over_the_size_cap_is_cut_off_and_fails_the_run(
    fetcher: Pipeline, standin: StandIn, listed: RecordingServer
) -> None:
    from workers.fetch.s3 import MAX_OBJECT_BYTES

    endless = with_inputs_url(standin, f"{listed.url}/endless")
    fine = fresh_run(inputs={"q": 1}, outputs={"a": 1})
    assert fetcher.post(delivery([endless, fine])).status_code == 202
    fetcher.wait_examples([fine["id"]])
    failed = failed_run_job(fetcher, endless["id"], timeout=60)
    assert failed.latest_result().exc_string.strip().endswith(
        f"run {endless['id']}: inputs: object is larger than {MAX_OBJECT_BYTES} bytes"
    )
    assert MAX_OBJECT_BYTES < listed.sent < MAX_OBJECT_BYTES + 16 * 1024 * 1024  # stopped reading
    assert not standin.examples_by_run([endless["id"]], fetcher.dataset)


def test_object_declaring_a_size_over_the_cap_is_not_read(fetcher: Pipeline, standin: StandIn) -> None:
    from workers.fetch.s3 import MAX_OBJECT_BYTES

    key = f"big/{uuid.uuid4()}.json"
    url = standin.put_object({"from": "s3"}, key=key, size_bytes=MAX_OBJECT_BYTES + 1)
    try:
        run = with_inputs_url(standin, url)
        assert fetcher.post(delivery([run])).status_code == 202
        failed = failed_run_job(fetcher, run["id"], timeout=60)
        assert failed.latest_result().exc_string.strip().endswith(f"object is larger than {MAX_OBJECT_BYTES} bytes")
    finally:
        standin.admin("DELETE", f"s3/{key}")


def test_docs_name_the_proxy_timeouts() -> None:
    guarantees = Path(ROOT / "docs" / "guarantees.md").read_text()
    assert "client_header_timeout" in guarantees and "client_body_timeout" in guarantees
