"""The `lswh` command line, run as a user runs it: the installed script, real servers."""

from __future__ import annotations

import pytest
from rq import Queue
from rq.registry import FailedJobRegistry

from lswh_core.contract import QUEUE
from lswh_core.redis import sync_redis
from tests.support.procs import Proc, RedisServer, free_port, lswh, python_module, running, wait_http


def finished(proc: Proc, timeout: float = 30.0) -> int:
    code = proc.popen.wait(timeout)
    proc.stop()
    return code


@pytest.fixture
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


@pytest.mark.parametrize("secrets", [None, "", ",", " , ,"])
def test_ingress_without_a_secret_exits_2_naming_lswh_secrets(monkeypatch, secrets):
    monkeypatch.delenv("LSWH_SECRETS", raising=False)
    env = {} if secrets is None else {"LSWH_SECRETS": secrets}
    proc = lswh("ingress", "--port", str(free_port()), env=env)
    assert finished(proc) == 2
    assert "LSWH_SECRETS" in proc.output()


def test_ingress_with_a_bad_setting_exits_2_with_its_message():
    proc = lswh(
        "ingress",
        "--port",
        str(free_port()),
        env={"LSWH_SECRETS": "s3cret-value", "LSWH_MAX_BODY_BYTES": "lots"},
    )
    assert finished(proc) == 2
    assert "LSWH_MAX_BODY_BYTES must be an integer" in proc.output()
    assert "Traceback" not in proc.output()


def test_help_lists_every_subcommand():
    proc = lswh("--help", name="lswh-help")
    assert finished(proc) == 0
    for command in ("ingress", "worker", "dev", "healthcheck", "requeue"):
        assert command in proc.output()


@pytest.fixture
def http_server():
    port = free_port()
    with running(python_module("http.server", str(port), "--bind", "127.0.0.1")) as proc:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        yield f"http://127.0.0.1:{port}"


def test_healthcheck_exits_0_when_the_url_answers_200(http_server):
    assert finished(lswh("healthcheck", "--url", f"{http_server}/")) == 0


def test_healthcheck_exits_1_when_the_url_answers_other_than_200(http_server):
    assert finished(lswh("healthcheck", "--url", f"{http_server}/no-such-page")) == 1


def test_healthcheck_exits_1_when_nothing_listens():
    assert finished(lswh("healthcheck", "--url", f"http://127.0.0.1:{free_port()}/readyz")) == 1


def test_worker_exits_2_when_langsmith_rejects_the_api_key(redis_server):
    port = free_port()
    with running(python_module("lswh_standin", "--host", "127.0.0.1", "--port", str(port))) as standin:
        wait_http(f"http://127.0.0.1:{port}/info", standin)
        proc = lswh(
            "worker",
            env={
                "REDIS_URL": redis_server.url,
                "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{port}",
                "LANGSMITH_API_KEY": "wrong",
            },
        )
        assert finished(proc, timeout=60) == 2
    assert "LANGSMITH_API_KEY" in proc.output()


def failed_jobs(url: str, count: int) -> tuple[Queue, list[str]]:
    """Jobs that really failed: enqueued with RQ's API, run by a real `rq worker --burst`."""
    queue = Queue(QUEUE, connection=sync_redis(url))
    ids = [queue.enqueue("json.loads", "not json").id for _ in range(count)]
    worker = python_module("rq.cli", "worker", "--burst", "--url", url, QUEUE, name="rq-worker")
    assert finished(worker, timeout=60) == 0, worker.output()
    assert sorted(FailedJobRegistry(queue=queue).get_job_ids()) == sorted(ids)
    return queue, ids


def test_requeue_all_puts_every_failed_job_back_on_the_queue(redis_server):
    queue, ids = failed_jobs(redis_server.url, 2)
    proc = lswh("requeue", "--all", env={"REDIS_URL": redis_server.url})
    assert finished(proc) == 0
    assert "requeued 2 jobs" in proc.output()
    assert sorted(queue.get_job_ids()) == sorted(ids)
    assert FailedJobRegistry(queue=queue).get_job_ids() == []


def test_requeue_by_id_requeues_only_that_job(redis_server):
    queue, ids = failed_jobs(redis_server.url, 2)
    proc = lswh("requeue", ids[0], env={"REDIS_URL": redis_server.url})
    assert finished(proc) == 0
    assert "requeued 1 job" in proc.output()
    assert queue.get_job_ids() == [ids[0]]
    assert FailedJobRegistry(queue=queue).get_job_ids() == [ids[1]]


def test_requeue_of_an_id_not_in_the_failed_registry_exits_1_naming_it(redis_server):
    proc = lswh("requeue", "no-such-job", env={"REDIS_URL": redis_server.url})
    assert finished(proc) == 1
    assert "no-such-job is not in the failed registry" in proc.output()


def test_requeue_needs_all_or_job_ids():
    proc = lswh("requeue", name="lswh-requeue")
    assert finished(proc) == 2
