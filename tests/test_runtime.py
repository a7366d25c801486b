"""workers/runtime.py called directly: the job's thread hops to one I/O loop thread (carrying the
job's context variables), blocking calls hop to the SDK pool, and the S3 http client is made once."""

import asyncio
import contextvars
import threading

import pytest

from workers.runtime import Runtime

FIELD: contextvars.ContextVar[str] = contextvars.ContextVar("field", default="unset")


def test_run_hops_to_one_loop_thread_with_the_callers_context(runtime: Runtime) -> None:
    async def where() -> tuple[str, str]:
        return threading.current_thread().name, FIELD.get()

    FIELD.set("delivery-1")
    first, second = runtime.run(where()), runtime.run(where())
    assert first == second == ("lswh-io", "delivery-1")
    assert threading.current_thread().name != "lswh-io"


def test_call_runs_blocking_work_on_the_sdk_pool(runtime: Runtime) -> None:
    async def hop() -> str:
        return await runtime.call(lambda: threading.current_thread().name)

    assert runtime.run(hop()).startswith("lswh-sdk")


def test_http_client_is_made_once_and_reused(runtime: Runtime) -> None:
    async def client() -> int:
        return id(runtime.http)

    assert runtime.run(client()) == runtime.run(client())


def test_an_error_in_the_coroutine_reaches_the_caller(runtime: Runtime) -> None:
    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        runtime.run(fail())
