"""Real servers, started once per test run: Redis, the LangSmith stand-in, a default pipeline;
and a worker runtime in the test's process, on those servers."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.procs import RedisServer
from tests.support.stack import Pipeline, StandIn, worker_runtime

if TYPE_CHECKING:
    from workers.runtime import Runtime


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def standin() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pipeline(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    """The default configuration, shared by every test that does not need its own."""
    stack = Pipeline(redis_server, standin, db=0)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def own_standin() -> Iterator[StandIn]:
    """A stand-in of the module's own, for tests of the stand-in itself: the resets they make
    never touch what other modules' pipelines wrote."""
    server = StandIn()
    yield server
    server.stop()


@pytest.fixture
def fresh(own_standin: StandIn) -> Iterator[StandIn]:
    """The module's own stand-in, emptied before and after the test."""
    own_standin.admin("POST", "reset")
    yield own_standin
    own_standin.admin("POST", "reset")


def pytest_configure(config: pytest.Config) -> None:
    """The suite talks to the LangSmith stand-in, a distribution of its own: say how to get it."""
    if importlib.util.find_spec("lswh_standin") is None:
        raise pytest.UsageError("the LangSmith stand-in (lswh_standin) is not installed: .venv/bin/pip install -e "
                                "./standin (the README's test command installs it)")


@pytest.fixture
def runtime(redis_server: RedisServer, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """A worker's runtime in the test's own process, for calling worker code directly."""
    with worker_runtime(redis_server, standin, monkeypatch) as made:
        yield made
