"""Behind a corporate proxy: every LangSmith request of both SDK clients goes through HTTP_PROXY
(with its credentials, which never reach a log); NO_PROXY naming the host sends none through it;
presigned S3 fetches go direct unless LSWH_S3_PROXY=env (issue 16).

The stand-in refuses (421) LangSmith requests without the header the test's proxy adds, so a
request that went around the proxy fails its run instead of landing."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.procs import RedisServer, free_port, python_module, wait_until
from tests.support.proxy import ForwardProxy
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run

VIA = ("X-Via-Test-Proxy", uuid.uuid4().hex)
CREDENTIALS = ("corp-user", f"proxy-pw-{uuid.uuid4().hex[:12]}")


def proxy_env(url: str, no_proxy: str = "") -> dict[str, str]:
    """Both spellings: urllib (so requests) prefers the lower-case one, and an inherited NO_PROXY
    (e.g. a CI's `localhost,127.0.0.1`) would send everything around the proxy."""
    return {"HTTP_PROXY": url, "http_proxy": url, "HTTPS_PROXY": url, "https_proxy": url,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy, "ALL_PROXY": "", "all_proxy": ""}


@pytest.fixture(scope="module")
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy(add_header=VIA, credentials=CREDENTIALS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded() -> Iterator[StandIn]:
    """A stand-in that answers 421 to LangSmith requests that did not come through the proxy."""
    server = StandIn(require_header=f"{VIA[0]}:{VIA[1]}")
    yield server
    server.stop()


def runs_of_every_kind(standin: StandIn) -> list[dict[str, Any]]:
    project = str(uuid.uuid4())
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)).isoformat()
    inline = fresh_run(session_id=project, start_time=start, inputs={"q": "inline"}, outputs={"a": "inline"})
    s3 = fresh_run(session_id=project, start_time=start)
    s3["inputs_s3_urls"] = {"ROOT": {"presigned_url": standin.put_object({"q": "s3"}), "s3_url": "s3://b/i"}}
    s3["outputs_s3_urls"] = {"ROOT": {"presigned_url": standin.put_object({"a": "s3"}), "s3_url": "s3://b/o"}}
    api_only = [fresh_run(session_id=project, start_time=start) for _ in range(3)]
    standin.add_runs([{**run, "inputs": {"q": f"api {i}"}, "outputs": {"a": f"api {i}"}}
                      for i, run in enumerate(api_only)])
    return [inline, s3, *api_only]


def test_every_run_lands_through_the_proxy_and_its_credentials_never_reach_a_log(
        redis_server: RedisServer, guarded: StandIn, proxy: ForwardProxy) -> None:
    misdirected_before = guarded.admin("GET", "tenants")["misdirected_total"]  # the test's own wait for /info
    pipeline = Pipeline(redis_server, guarded, db=54, LSWH_LOG_FORMAT="text", **proxy_env(proxy.url()))
    try:
        runs = runs_of_every_kind(guarded)
        assert pipeline.post(delivery(runs)).status_code == 202
        found = pipeline.wait_examples([r["id"] for r in runs], timeout=60)
        assert found[runs[1]["id"]][0]["inputs"] == {"q": "s3"}
        assert found[runs[4]["id"]][0]["inputs"] == {"q": "api 2"}
        # Both clients: the requests client's dataset calls and the v2 client's runs query.
        assert proxy.paths["POST /api/v2/runs/query"] >= 1 and proxy.paths["GET /datasets"] >= 1
        assert not [path for path in proxy.paths if path.startswith("GET /s3/")]  # LSWH_S3_PROXY=off: direct
        assert guarded.admin("GET", "tenants")["misdirected_total"] == misdirected_before
        assert proxy.refused == 0  # both clients sent the credentials
        pipeline.wait_idle()
        output = "\n".join(w.output() for w in pipeline.workers)
        assert CREDENTIALS[1] not in output
        assert "proxy http://<redacted>@127.0.0.1" in output  # the start line says which proxy, masked
    finally:
        pipeline.stop()


def test_no_proxy_naming_the_host_sends_nothing_through_the_proxy(redis_server: RedisServer, standin: StandIn,
                                                                   proxy: ForwardProxy) -> None:
    before = proxy.total
    pipeline = Pipeline(redis_server, standin, db=55, **proxy_env(proxy.url(), no_proxy="127.0.0.1,localhost"))
    try:
        runs = runs_of_every_kind(standin)
        assert pipeline.post(delivery(runs)).status_code == 202
        pipeline.wait_examples([r["id"] for r in runs], timeout=60)
        pipeline.wait_idle()
        assert proxy.total == before
    finally:
        pipeline.stop()


def test_presigned_fetches_use_the_proxy_only_when_told(redis_server: RedisServer, guarded: StandIn,
                                                         proxy: ForwardProxy) -> None:
    pipeline = Pipeline(redis_server, guarded, db=56, LSWH_S3_PROXY="env", **proxy_env(proxy.url()))
    try:
        run = fresh_run(session_id=str(uuid.uuid4()))
        run["inputs_s3_urls"] = {"ROOT": {"presigned_url": guarded.put_object({"q": "via"}), "s3_url": "s3://b/v"}}
        run["outputs_s3_urls"] = {"ROOT": {"presigned_url": guarded.put_object({"a": "via"}), "s3_url": "s3://b/w"}}
        assert pipeline.post(delivery([run])).status_code == 202
        found = pipeline.wait_examples([run["id"]], timeout=60)
        assert found[run["id"]][0]["inputs"] == {"q": "via"}
        assert [path for path in proxy.paths if path.startswith("GET /s3/")]
    finally:
        pipeline.stop()


def redis_text(pipeline: Pipeline) -> str:
    """Every string Redis holds for this pipeline: jobs (RQ keeps failures' tracebacks), hashes, lists."""
    client = pipeline.redis
    parts: list[str] = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        if kind == "string":
            parts.append(str(client.get(key)))
        elif kind == "hash":
            parts.append(str(client.hgetall(key)))
        elif kind == "list":
            parts.append(str(client.lrange(key, 0, -1)))
        elif kind in ("set", "zset"):
            parts.append(str(client.zrange(key, 0, -1) if kind == "zset" else client.smembers(key)))
    return "\n".join(parts)


def test_an_unreachable_proxy_holds_the_jobs_without_its_credentials_reaching_a_log_or_job(
        redis_server: RedisServer, standin: StandIn) -> None:
    """Through a dead proxy `/info` cannot be read, so the worker waits (workers/worker.py) instead of
    failing runs on a guessed backend: the delivery stays queued, and the proxy's password is in no
    log line and no Redis value while the worker reports why it waits."""
    dead = f"http://{CREDENTIALS[0]}:{CREDENTIALS[1]}@127.0.0.1:{free_port()}"
    pipeline = Pipeline(redis_server, standin, db=57, LSWH_RETRIES="0", LSWH_LOG_FORMAT="text",
                        **proxy_env(dead))
    try:
        run = fresh_run(session_id=str(uuid.uuid4()),
                        start_time=(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)).isoformat())
        standin.add_runs([{**run, "inputs": {"q": "x"}, "outputs": {"a": "x"}}])
        assert pipeline.post(delivery([run])).status_code == 202
        from tests.support.faults import wait_for

        wait_for(lambda: "waiting for LangSmith /info" in pipeline.workers[0].output(), 60,
                 "the worker to say it waits for /info through the dead proxy",
                 detail=lambda: pipeline.workers[0].output()[-2000:])
        output = "\n".join(w.output() for w in pipeline.workers)
        assert CREDENTIALS[1] not in output
        assert CREDENTIALS[1] not in redis_text(pipeline)
        assert not pipeline.failed_jobs()  # held, not failed on a guess
        assert standin.examples_by_run([run["id"]], pipeline.dataset) == {}
    finally:
        pipeline.stop()


# --- HTTPS: CONNECT through the proxy, a private CA trusted through the policy ---------------

TLS_HOST = "langsmith.test"  # a reserved name: only the test's proxy resolves it


def make_ca_and_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for TLS_HOST and 127.0.0.1 (openssl CLI)."""
    ca_key, ca_cert = folder / "ca.key", folder / "ca.pem"
    key, csr, cert, ext = folder / "server.key", folder / "server.csr", folder / "server.pem", folder / "san.ext"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lswh test CA",
            "-keyout", str(ca_key), "-out", str(ca_cert))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={TLS_HOST}", "-keyout", str(key), "-out", str(csr))
    ext.write_text(f"subjectAltName=DNS:{TLS_HOST},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca_cert, cert, key


class TlsStandIn(StandIn):
    """The stand-in over HTTPS, with a certificate from the test's private CA."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc = python_module("lswh_standin", "--host", "127.0.0.1", "--port", str(self.port),
                                  "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), name="standin-tls")
        self.http = httpx.Client(base_url=self.url, timeout=30, verify=ssl.create_default_context(cafile=str(ca)))
        wait_until(lambda: self.http.get("/info").status_code == 200, 20, what="the TLS stand-in")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsStandIn, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test CA with")
    ca, cert, key = make_ca_and_certificate(Path(tmp_path_factory.mktemp("tls")))
    server = TlsStandIn(cert, key, ca)
    yield server, ca
    server.stop()


@pytest.mark.parametrize("ca_variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_over_https_both_clients_tunnel_through_the_proxy_and_trust_the_configured_ca(
        redis_server: RedisServer, tls: tuple[TlsStandIn, Path], ca_variable: str) -> None:
    standin, ca = tls
    proxy = ForwardProxy(add_header=VIA, credentials=CREDENTIALS, hosts={TLS_HOST: "127.0.0.1"})
    # This machine may set all three CA variables: only the one under test names the private CA.
    cas = {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "SSL_CERT_FILE": "", ca_variable: str(ca)}
    pipeline = Pipeline(redis_server, standin, db=58 if ca_variable == "SSL_CERT_FILE" else 59,
                        LANGSMITH_ENDPOINT=f"https://{TLS_HOST}:{standin.port}", **cas, **proxy_env(proxy.url()))
    try:
        project = str(uuid.uuid4())
        start = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)).isoformat()
        inline = fresh_run(session_id=project, start_time=start, inputs={"q": "inline"}, outputs={"a": "inline"})
        api_only = [fresh_run(session_id=project, start_time=start) for _ in range(3)]
        standin.add_runs([{**run, "inputs": {"q": f"api {i}"}, "outputs": {"a": f"api {i}"}}
                          for i, run in enumerate(api_only)])
        runs = [inline, *api_only]
        assert pipeline.post(delivery(runs)).status_code == 202
        found = pipeline.wait_examples([r["id"] for r in runs], timeout=60)
        assert found[api_only[0]["id"]][0]["inputs"] == {"q": "api 0"}  # the v2 query, through the tunnel
        # langsmith.test resolves nowhere but in the proxy: every request went through it.
        assert proxy.forwarded[f"CONNECT {TLS_HOST}:{standin.port}"] >= 2  # at least one per client
        assert proxy.refused == 0
        assert "CERTIFICATE_VERIFY_FAILED" not in pipeline.workers[0].output()
    finally:
        pipeline.stop()
        proxy.stop()
