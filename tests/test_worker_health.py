"""`lswh healthcheck --worker`, the compose and Kubernetes liveness check of a worker: a real
Redis, a real `lswh worker`, the command run as Docker runs it."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.commands import run_lswh
from tests.support.procs import RedisServer, free_port, wait_until
from tests.support.stack import Pipeline, StandIn

DB = 60


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    pipeline = Pipeline(redis_server, standin, db=DB, workers=0)
    yield pipeline
    pipeline.stop()


def check(stack: Pipeline, *args: str, redis_url: str | None = None) -> tuple[int, str]:
    done = run_lswh({**stack.env, "REDIS_URL": redis_url or stack.redis_url}, "healthcheck", "--worker", *args,
                    timeout=30)
    return done.returncode, (done.stdout + done.stderr).strip()


def test_no_worker_of_this_host_is_unhealthy(stack: Pipeline) -> None:
    code, said = check(stack)
    assert code == 1
    assert said == f"lswh healthcheck: no worker registered from host {socket.gethostname()}"


def test_live_worker_is_healthy_and_a_stopped_one_goes_unhealthy(stack: Pipeline) -> None:
    worker = stack.add_worker()
    try:
        wait_until(lambda: check(stack)[0] == 0, timeout=60, interval=0.5, what="the worker's first heartbeat")
        assert "heartbeat" in check(stack)[1]
        # Frozen (SIGSTOP: a wedged process that still holds its registration): the heartbeat
        # ages past --max-age and the check fails, though RQ still lists the worker.
        worker.signal_group(signal.SIGSTOP)
        try:
            wait_until(lambda: check(stack, "--max-age", "12")[0] == 1, timeout=45, interval=1,
                       what="the frozen worker's heartbeat to age past 12 s")
            code, said = check(stack, "--max-age", "12")
            assert code == 1 and "last heartbeat" in said and "limit 12 s" in said, said
            from rq import Worker

            assert any(w.hostname == socket.gethostname() for w in Worker.all(connection=stack.redis))
        finally:
            worker.signal_group(signal.SIGCONT)
        # Thawed, it beats again within one turn of its loop.
        wait_until(lambda: check(stack, "--max-age", "12")[0] == 0, timeout=30, interval=0.5,
                   what="the thawed worker to beat again")
    finally:
        worker.stop()
        stack.workers.remove(worker)


def test_a_worker_waiting_for_langsmith_info_is_alive(stack: Pipeline) -> None:
    """A worker that cannot read LangSmith's /info takes no jobs but is waiting, not dead
    (workers/worker.py): its heartbeat goes on, so the liveness check never restarts it in a loop."""
    stack.standin.fail_info(100_000)
    worker = stack.add_worker()
    try:
        wait_until(lambda: "waiting for LangSmith /info" in worker.output(), timeout=60, interval=0.5,
                   what="the worker to say it waits for /info")
        waited_from = time.monotonic()
        while time.monotonic() - waited_from < 20:  # past --max-age 12: only fresh beats pass
            code, said = check(stack, "--max-age", "12")
            assert code == 0, said
            time.sleep(2)
        assert "taking jobs" not in worker.output()
    finally:
        stack.standin.fail_info(0)
        worker.stop()
        stack.workers.remove(worker)


def test_unreadable_redis_is_not_the_workers_fault(stack: Pipeline) -> None:
    started = time.monotonic()
    code, said = check(stack, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert code == 0
    assert said.startswith("lswh healthcheck: cannot read Redis (ConnectionError)"), said
    assert time.monotonic() - started < 20


def test_bad_redis_url_is_a_clear_error(stack: Pipeline) -> None:
    code, said = check(stack, redis_url="http://nope")
    assert code == 2
    assert "REDIS_URL must start with redis://" in said
