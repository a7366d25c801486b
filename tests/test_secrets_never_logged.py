"""Neither a webhook secret, nor a presigned URL's signature, nor the LangSmith API key appears in
any log line or anywhere RQ keeps a job (arguments, description, meta, stored exception, result:
rq-dashboard shows them all), after a full run that includes failures of every kind."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support.faults import failed_run_job, injected, rq_texts, wait_for
from tests.support.procs import RedisServer, free_port
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run


def signature(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]


def urls(url: str) -> dict[str, Any]:
    return {"ROOT": {"presigned_url": url, "s3_url": "s3://lswh-standin/x"}}


def test_no_secret_or_signature_in_logs_or_jobs(redis_server: RedisServer, standin: StandIn) -> None:
    query_secret, bearer_secret = f"q-{secrets.token_urlsafe(18)}", f"b-{secrets.token_urlsafe(18)}"
    closed = free_port()  # allowed, but nobody listens: the fetch fails with the URL in hand
    stack = Pipeline(
        redis_server,
        standin,
        db=8,
        LSWH_SECRETS=f"{query_secret},{bearer_secret}",
        LSWH_RETRIES="1",
        LSWH_S3_ALLOWED_HOSTS=f"http://127.0.0.1:{standin.port},http://127.0.0.1:{closed}",
    )
    try:
        valid = standin.put_object({"from": "s3"})
        expired = standin.put_object({"from": "s3"}, expires_in=0)
        gone_key = f"runs/{uuid.uuid4()}.json"
        gone = standin.put_object({"from": "s3"}, key=gone_key)
        standin.admin("DELETE", f"s3/{gone_key}")
        flaky_key = f"runs/{uuid.uuid4()}.json"
        flaky = standin.put_object({"from": "s3"}, key=flaky_key)
        unreachable = valid.replace(f":{standin.port}/", f":{closed}/", 1)
        presigned = [valid, expired, gone, flaky, unreachable]

        ok = fresh_run(inputs_s3_urls=urls(valid), outputs={"a": 1})
        fallback = fresh_run(inputs_s3_urls=urls(expired), outputs={"a": 1})  # 403, the API has it
        standin.add_runs([{**fallback, "inputs": {"from": "api"}}])
        orphan = fresh_run(inputs_s3_urls=urls(gone))  # 404 and not in the API: fails at once
        flaky_run = fresh_run(inputs_s3_urls=urls(flaky), outputs={"a": 1})  # 503 on every attempt
        with injected(standin, f"GET /s3/lswh-standin/{flaky_key}", times=2, status=503):
            refused = fresh_run(inputs_s3_urls=urls(unreachable), outputs={"a": 1})  # connection refused

            first = delivery([ok, fallback, orphan])
            second = delivery([flaky_run, refused])
            http = httpx.Client(base_url=stack.url, timeout=10)
            assert (
                http.post("/webhooks/langsmith", params={"secret": query_secret}, content=json.dumps(first)).status_code
                == 202
            )
            assert (
                http.post(
                    "/webhooks/langsmith",
                    headers={"Authorization": f"Bearer {bearer_secret}"},
                    content=json.dumps(second),
                ).status_code
                == 202
            )
            # Near misses are logged as requests too: a typo of a secret is as good as the secret.
            for wrong in (f"{query_secret}x", query_secret[:-1]):
                assert http.post("/webhooks/langsmith", params={"secret": wrong}, content=b"{}").status_code == 401
            assert (
                http.post("/webhooks/langsmith", params={"secret": query_secret}, content=b"not json").status_code
                == 400
            )
            http.close()

            stack.wait_examples([ok["id"], fallback["id"]])
            for run in (orphan, flaky_run, refused):
                failed_run_job(stack, run["id"], timeout=60)
            stack.wait_idle()

        needles = {
            "query secret": query_secret,
            "bearer secret": bearer_secret,
            "API key": stack.env["LANGSMITH_API_KEY"],
            **{f"signature of {u[:60]}": signature(u) for u in presigned},
        }
        logs = {"ingress": stack.ingress.output(), **{f"worker {i}": w.output() for i, w in enumerate(stack.workers)}}
        assert '"message":"delivery accepted"' in logs["ingress"]  # its own line per delivery (no access log)
        assert f"run {flaky_run['id']}: inputs: object store answered 503" in logs["worker 0"]
        leaks = [
            f"{name} in {where}" for where, text in logs.items() for name, needle in needles.items() if needle in text
        ]
        stored = list(rq_texts(stack.redis))
        assert any(key.endswith("#exc_info") or "#exc_string" in key for key, _ in stored)
        leaks += [
            f"{name} in {key}" for key, value in stored for name, needle in needles.items() if needle.encode() in value
        ]
        assert leaks == []
        # The raw delivery is kept as it came (presigned URLs included) for LSWH_KEEP_DAYS: it
        # lives under lswh:delivery:*, outside RQ, and is never shown by rq-dashboard.
        wait_for(lambda: stack.redis.keys("lswh:delivery:*"), 1, "raw deliveries")
    finally:
        stack.stop()


def test_redaction_marks_a_query_once() -> None:
    """The access log passes through the filter on the logger and on its handler: redacting
    twice must not stack markers (`?<redacted><redacted><redacted>` today)."""
    from lswh_core.redact import redact

    line = '127.0.0.1:1 - "POST /webhooks/langsmith?secret=abc HTTP/1.1" 202'
    assert (
        redact(redact(redact(line)))
        == redact(line)
        == ('127.0.0.1:1 - "POST /webhooks/langsmith?<redacted> HTTP/1.1" 202')
    )
