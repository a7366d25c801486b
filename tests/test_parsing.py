"""Large bodies are checked off the event loop; the answers are the same as inline."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from ingress.parsing import INLINE_MAX_BYTES, BodyChecker
from ingress.payload import BadDelivery
from lswh_core.contract import delivery_id_of
from tests.support.procs import Proc, RedisServer, free_port, lswh, wait_http

SECRET = "parse-secret"


def large_body(target: int) -> bytes:
    text = "lorem ipsum dolor sit amet " * 40
    runs = []
    size = 0
    while size < target:
        run = {"id": str(uuid.uuid4()), "inputs": {"q": text}, "outputs": {"a": text}}
        size += len(json.dumps(run)) + 2
        runs.append(run)
    return json.dumps({"rule_id": "r", "runs": runs}).encode()


@pytest.fixture(scope="module")
def checker() -> Iterator[BodyChecker]:
    checker = BodyChecker(processes=2)
    yield checker
    checker.close()


def run(checker: BodyChecker, body: bytes) -> tuple[str, int | None, int | None]:
    async def go() -> tuple[str, int | None, int | None]:
        await checker.start()
        return await checker.check(body)

    return asyncio.run(go())


def test_a_large_body_gets_the_same_id_and_run_count_as_inline(checker: BodyChecker) -> None:
    body = large_body(INLINE_MAX_BYTES * 4)
    assert run(checker, body) == (delivery_id_of(body), len(json.loads(body)["runs"]), None)


def test_a_large_bad_body_is_refused_with_the_inline_reason(checker: BodyChecker) -> None:
    body = large_body(INLINE_MAX_BYTES * 2)[:-1]
    with pytest.raises(BadDelivery, match="body is not JSON"):
        run(checker, body)
    body = json.dumps({"runs": [{"id": ""}], "pad": "x" * INLINE_MAX_BYTES}).encode()
    with pytest.raises(BadDelivery, match=r"runs\[0\]\.id must be a non-empty string"):
        run(checker, body)


def test_the_event_loop_keeps_turning_while_a_large_body_is_parsed(checker: BodyChecker) -> None:
    """Counted, not timed: an inline parse would let the ticker run not once meanwhile."""
    body = large_body(8 * 1024 * 1024)

    async def go() -> int:
        await checker.start()
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.001)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        await checker.check(body)
        done.set()
        await ticking
        return ticks

    assert asyncio.run(go()) >= 20


@pytest.fixture(scope="module")
def ingress(redis_server: RedisServer) -> Iterator[str]:
    port = free_port()
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/10", "LSWH_SECRETS": SECRET}
    proc: Proc = lswh("ingress", "--port", str(port), env=env, name="ingress-parsing")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def test_small_deliveries_are_answered_while_large_ones_are_parsed(ingress: str) -> None:
    """Four large deliveries at once: small ones keep getting their 202 before the last large
    one is answered, and every delivery is stored. (The p99 figure: bench/ingress_large.py.)"""
    large = [large_body(6 * 1024 * 1024) for _ in range(4)]
    answers: list[int] = []
    finished = threading.Event()

    def post_large(body: bytes) -> None:
        with httpx.Client(timeout=60) as client:
            answers.append(client.post(f"{ingress}/webhooks/langsmith", params={"secret": SECRET},
                                       content=body).status_code)
        if len(answers) == len(large):
            finished.set()

    threads = [threading.Thread(target=post_large, args=(body,)) for body in large]
    for thread in threads:
        thread.start()
    small_before_last_large = []
    with httpx.Client(timeout=10) as client:
        while not finished.is_set():
            body = json.dumps({"runs": [{"id": str(uuid.uuid4())}]}).encode()
            response = client.post(f"{ingress}/webhooks/langsmith", params={"secret": SECRET}, content=body)
            if not finished.is_set():
                small_before_last_large.append(response.status_code)
    for thread in threads:
        thread.join(60)
    assert answers == [202] * 4
    assert len(small_before_last_large) >= 3 and set(small_before_last_large) == {202}


def test_a_killed_parse_process_answers_unavailable_once_then_a_new_pool_parses() -> None:
    """The OOM killer may take a parse process: that delivery gets 503 (LangSmith retries),
    the next ones are parsed by a fresh pool."""
    import multiprocessing
    import os
    import signal

    from ingress.parsing import ParserUnavailable

    body = large_body(INLINE_MAX_BYTES * 2)
    checker = BodyChecker(processes=1)
    try:
        async def go() -> tuple[str, int | None, int | None]:
            others = set(multiprocessing.active_children())
            await checker.start()
            for child in set(multiprocessing.active_children()) - others:
                os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
                child.join(10)
            with pytest.raises(ParserUnavailable):
                await checker.check(body)
            return await checker.check(body)

        assert asyncio.run(go()) == (delivery_id_of(body), len(json.loads(body)["runs"]), None)
    finally:
        checker.close()
