"""The shared LangSmith rate budget (workers/langsmith/budget.py) against a real Redis server, drawn from by
separate OS processes as workers on several hosts would."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support.procs import Proc, RedisServer, python_module, wait_until
from workers.langsmith.budget import Grant, Limit, RateBudget, budget_keys, key_hash

# Short windows keep the tests quick; the property under test does not depend on their length.
WINDOW = 0.5
MARGIN = 0.05


class CountingBudget(RateBudget):
    """The real budget, counting its attempts (each one Redis call) and its grants' Redis times."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tries = 0
        self.granted_at: list[float] = []

    def try_acquire(self, route: str) -> Grant:
        grant = super().try_acquire(route)
        self.tries += 1
        if grant.granted:
            self.granted_at.append(grant.at)
        return grant


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def api_key() -> str:
    """A fresh key per test: its budgets are its own."""
    return f"lsv2-test-{uuid.uuid4().hex}"


def lines(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


def drawer(redis_server: RedisServer, api_key: str, limits: str, start_key: str, *actions: str) -> Proc:
    return python_module("tests.support.budget_draw", redis_server.url, api_key, limits, str(MARGIN), start_key,
                         *actions, name="budget-draw")


def start_together(connection: redis.Redis, start_key: str, procs: list[Proc]) -> None:
    for proc in procs:
        wait_until(lambda proc=proc: any(line.get("ready") for line in lines(proc)), what=f"{proc.name} ready")
    connection.rpush(start_key, *["go"] * len(procs))


def finish(procs: list[Proc]) -> list[list[dict[str, Any]]]:
    try:
        for proc in procs:
            wait_until(lambda proc=proc: any(line.get("done") for line in lines(proc)) or not proc.alive(),
                       timeout=60, what=f"{proc.name} done")
        outputs = [lines(proc) for proc in procs]
        for proc, output in zip(procs, outputs, strict=True):
            assert any(line.get("done") for line in output), proc.output()
        return outputs
    finally:
        for proc in procs:
            proc.stop()


def most_in_any_window(times: list[float], window: float) -> int:
    """The most grants inside any half-open interval (t - window, t]."""
    ordered = sorted(times)
    return max(sum(1 for other in ordered if t - window < other <= t) for t in ordered)


def test_two_processes_together_never_exceed_the_limit_in_any_window(
        redis_server: RedisServer, connection: redis.Redis, api_key: str) -> None:
    start_key = f"test:start:{uuid.uuid4().hex}"
    procs = [drawer(redis_server, api_key, f"run_query=4/{WINDOW}s", start_key, "draw:run_query:10")
             for _ in range(2)]
    start_together(connection, start_key, procs)
    outputs = finish(procs)

    grants = [line for output in outputs for line in output if "at" in line]
    assert len(grants) == 20
    times = [line["at"] for line in grants]
    # LangSmith's own window, and the budget's own (window + margin) that guarantees it.
    assert most_in_any_window(times, WINDOW) <= 4
    assert most_in_any_window(times, WINDOW + MARGIN - 0.001) <= 4
    # The two drew at the same time, so separate budgets would have let up to 8 through.
    spans = [[line["at"] for line in output if "at" in line] for output in outputs]
    assert max(min(span) for span in spans) < min(max(span) for span in spans)
    assert most_in_any_window(times, WINDOW) == 4  # the budget was used up, not merely unused


def test_a_429_pauses_the_route_for_another_process(
        redis_server: RedisServer, connection: redis.Redis, api_key: str) -> None:
    start_key = f"test:start:{uuid.uuid4().hex}"
    # A budget this large would grant at once: only the pause can make the other process wait.
    limits = {"run_read": Limit(100, 1.0)}
    here = RateBudget(connection, api_key, limits, margin_seconds=MARGIN)
    other = drawer(redis_server, api_key, "run_read=100/1s", start_key, "draw:run_read:1")
    wait_until(lambda: any(line.get("ready") for line in lines(other)), what="drawer ready")

    seconds, micros = connection.time()
    here.rate_limited("run_read")
    connection.rpush(start_key, "go")
    [output] = finish([other])

    paused_at = seconds + micros / 1e6

    [grant] = [line for line in output if "at" in line]
    assert grant["tries"] >= 2  # refused first, then let through once the pause ended
    assert grant["at"] >= paused_at + 1.0 + MARGIN - 0.002  # Redis time: ms resolution
    assert here.try_acquire("run_read").granted


def test_a_pause_is_logged_once_however_many_429s_and_processes_report_it(
        redis_server: RedisServer, connection: redis.Redis, api_key: str, caplog: pytest.LogCaptureFixture) -> None:
    start_key = f"test:start:{uuid.uuid4().hex}"
    pauses: list[tuple[str, float]] = []
    here = RateBudget(connection, api_key, {"other": Limit(10, 5.0)}, margin_seconds=MARGIN,
                      on_pause=lambda route, seconds: pauses.append((route, seconds)))
    other = drawer(redis_server, api_key, "other=10/5s", start_key, "limited:other", "limited:other")
    start_together(connection, start_key, [other])
    with caplog.at_level(logging.WARNING, logger="workers.langsmith.budget"):
        for _ in range(3):
            here.rate_limited("other")
        [output] = finish([other])

    paused_there = sum(1 for line in output if line.get("paused_here"))
    assert len(pauses) + paused_there == 1
    assert len([r for r in caplog.records if r.name == "workers.langsmith.budget"]) == len(pauses)
    if pauses:
        assert pauses == [("other", 5.0 + MARGIN)]
        assert api_key not in caplog.text


def test_waiting_sleeps_until_a_slot_frees_instead_of_polling(connection: redis.Redis, api_key: str) -> None:
    budget = CountingBudget(connection, api_key, {"run_query": Limit(3, 0.3)}, margin_seconds=MARGIN)
    waits = [budget.acquire("run_query") for _ in range(12)]

    assert len(budget.granted_at) == 12
    assert sum(1 for w in waits if w > 0) >= 3  # 12 grants of 3 per window: it waited
    # Each refusal is followed by a sleep until the oldest grant ages out, so the next try wins:
    # at most one refused try per grant (polling would try hundreds of times).
    assert budget.tries <= 2 * 12
    assert most_in_any_window(budget.granted_at, 0.3) <= 3


def test_waiting_on_the_event_loop_lets_other_coroutines_run(connection: redis.Redis, api_key: str) -> None:
    budget = CountingBudget(connection, api_key, {"run_query": Limit(1, 0.3)}, margin_seconds=MARGIN)
    budget.acquire("run_query")  # the budget is now empty for about 0.35 s

    async def main() -> tuple[float, int]:
        ticks = 0
        waiting = True

        async def ticker() -> None:
            nonlocal ticks
            while waiting:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        waited = await budget.acquire_async("run_query")
        waiting = False
        await task
        return waited, ticks

    waited, ticks = asyncio.run(main())
    assert waited > 0
    assert budget.tries <= 3
    # A blocking sleep would let the ticker run only between the few Redis round trips.
    assert ticks > 100


def test_every_budget_key_expires_and_none_names_the_api_key(connection: redis.Redis, api_key: str) -> None:
    budget = RateBudget(connection, api_key, {"run_read": Limit(5, 60.0), "examples_get": Limit(5, 60.0)})
    budget.acquire("run_read")
    budget.acquire("examples_get")
    budget.rate_limited("examples_get")

    keys = [key.decode() for key in connection.scan_iter(match=f"lswh:budget:*{key_hash(api_key)}*")]
    assert sorted(keys) == sorted([*budget_keys(api_key, "run_read")[:1], *budget_keys(api_key, "examples_get")])
    for key in keys:
        assert api_key not in key
        assert 0 < connection.pttl(key) <= 61_500


def test_a_route_switched_off_is_not_budgeted(connection: redis.Redis, api_key: str) -> None:
    budget = RateBudget(connection, api_key, {"run_read": Limit(1, 60.0)})
    assert [budget.acquire("other") for _ in range(5)] == [0.0] * 5
    budget.rate_limited("other")
    assert list(connection.scan_iter(match=f"lswh:budget:*{key_hash(api_key)}*")) == []


def test_an_unknown_route_is_a_programming_error(connection: redis.Redis, api_key: str) -> None:
    budget = RateBudget(connection, api_key, {"run_read": Limit(1, 60.0)})
    with pytest.raises(ValueError, match="unknown rate-limit route 'runs'"):
        budget.acquire("runs")


def test_budgets_of_different_api_keys_are_separate(connection: redis.Redis, api_key: str) -> None:
    limits = {"run_read": Limit(1, 60.0)}
    first = RateBudget(connection, api_key, limits)
    second = RateBudget(connection, f"{api_key}-other", limits)
    assert first.try_acquire("run_read").granted
    assert not first.try_acquire("run_read").granted
    assert second.try_acquire("run_read").granted


def test_a_lowered_limit_waits_for_enough_grants_to_age_out(connection: redis.Redis, api_key: str) -> None:
    """Workers restarted with a smaller limit find more grants in the log than they allow."""
    generous = RateBudget(connection, api_key, {"run_query": Limit(6, 1.0)}, margin_seconds=MARGIN)
    for _ in range(6):
        assert generous.try_acquire("run_query").granted
        time.sleep(0.02)  # spread the grants, so they age out one by one
    strict = CountingBudget(connection, api_key, {"run_query": Limit(2, 1.0)}, margin_seconds=MARGIN)
    strict.acquire("run_query")
    # One refusal, one sleep until five of the six had aged out, one grant: not a try per grant
    # that aged out.
    assert strict.tries == 2


def test_threads_and_coroutines_of_one_process_share_its_budget(connection: redis.Redis, api_key: str) -> None:
    """The worker calls it from SDK threads and from its asyncio loop at once."""
    budget = CountingBudget(connection, api_key, {"examples_get": Limit(5, WINDOW)}, margin_seconds=MARGIN)

    def draw_sync() -> None:
        for _ in range(3):
            budget.acquire("examples_get")

    async def draw_async() -> None:
        for _ in range(3):
            await budget.acquire_async("examples_get")

    async def main() -> None:
        await asyncio.gather(*(asyncio.to_thread(draw_sync) for _ in range(3)), *(draw_async() for _ in range(3)))

    asyncio.run(main())
    assert len(budget.granted_at) == 18
    assert most_in_any_window(budget.granted_at, WINDOW + MARGIN - 0.001) == 5
