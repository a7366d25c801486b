"""workers/runtime.py called directly: the job's thread hops to one I/O loop thread (carrying the
job's context variables), blocking SDK calls hop to the LangSmith door's pool, Redis is called on
the loop itself, and presigned objects are fetched on the loop through one reused session."""

import asyncio
import contextvars
import threading

import pytest

from tests.support.stack import StandIn
from workers.runtime import Runtime

FIELD: contextvars.ContextVar[str] = contextvars.ContextVar("field", default="unset")


def test_run_hops_to_one_loop_thread_with_the_callers_context(runtime: Runtime) -> None:
    async def where() -> tuple[str, str]:
        return threading.current_thread().name, FIELD.get()

    FIELD.set("delivery-1")
    first, second = runtime.run(where()), runtime.run(where())
    assert first == second == ("lswh-io", "delivery-1")
    assert threading.current_thread().name != "lswh-io"


def test_sdk_calls_hop_to_the_langsmith_doors_pool(runtime: Runtime) -> None:
    async def hop() -> str:
        return await runtime.langsmith.call(lambda: threading.current_thread().name)

    assert runtime.run(hop()).startswith("lswh-sdk")


def test_redis_is_called_on_the_loop_itself(runtime: Runtime) -> None:
    """No thread hop for Redis (workers/runtime.py says why): the call returns on the loop thread."""
    async def ping() -> tuple[bool, str]:
        return bool(runtime.redis.ping()), threading.current_thread().name

    assert runtime.run(ping()) == (True, "lswh-io")


def test_objects_are_fetched_on_the_loop_through_one_session(runtime: Runtime, standin: StandIn) -> None:
    url = standin.put_object({"question": "q"})

    async def fetch() -> tuple[dict[str, object], int]:
        value, _size = await runtime.objects.fetch_json(url, "inputs")
        return value, id(runtime.objects._session)

    first, second = runtime.run(fetch()), runtime.run(fetch())
    assert first[0] == second[0] == {"question": "q"}
    assert first[1] == second[1]


def test_an_error_in_the_coroutine_reaches_the_caller(runtime: Runtime) -> None:
    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        runtime.run(fail())
