"""What one Redis command costs the ingress's process, in process, against a local redis-server.

    python -m bench.redis_path [--commands N] [--rounds N]

Each command is awaited before the next is sent, as a delivery at a steady 1,000 req/s is stored
alone (nothing shares its round trip). Measured per command, CPU of this process and wall time:

- PING through redis-py's asyncio client (`execute_command`, the pool the ingress uses);
- PING through ingress.autopipeline (one held connection used as a raw pipeline);
- the delivery store, `DeliveryQueue.store` (the EVALSHA of ingress/enqueue.py), as shipped,
  and the same EVALSHA through redis-py's `execute_command`, the path it replaced.

Medians of rounds; uvloop, as `lswh ingress` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import uvloop
from rq.job import Job

from bench.payloads import fresh_body
from ingress.autopipeline import AutoPipeline
from ingress.enqueue import ENQUEUE_BUDGET_SECONDS, DeliveryQueue
from lswh_core import contract
from lswh_core.redis import async_redis
from lswh_core.settings import Settings
from tests.support.procs import RedisServer

Step = Callable[[int], Awaitable[object]]


async def _per_command(step: Step, count: int) -> tuple[float, float]:
    """(CPU us, wall us) per command, `count` commands one after another."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        await step(i)
    return (time.process_time() - cpu) / count * 1e6, (time.perf_counter() - wall) / count * 1e6


async def _measure(url: str, commands: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    settings = Settings(redis_url=url, secrets=("bench-secret-0123456789",))
    client = async_redis(url)
    pipeline = AutoPipeline(client, ENQUEUE_BUDGET_SECONDS)
    queue = DeliveryQueue(client, settings)
    await client.script_load(queue._script.script)
    bodies = [fresh_body() for _ in range(2 * (commands * rounds + 1))]  # two store paths, each warmed once
    ids = [contract.delivery_id_of(body) for body in bodies]
    taken = iter(range(len(bodies)))

    async def store_as_shipped(_: int) -> object:
        n = next(taken)
        return await queue.store(bodies[n], ids[n], 1)

    async def store_through_redis_py(_: int) -> object:
        n = next(taken)
        delivery_id = ids[n]
        job_id = contract.delivery_job_id(delivery_id)
        # The command DeliveryQueue.store builds, sent the way the ingress sent it before.
        return await client.execute_command(
            "EVALSHA", queue._script.sha, 5, contract.seen_key(delivery_id), Job.key_for(job_id), queue._queue_key,
            queue._queues_key, contract.delivery_key(delivery_id), bodies[n], settings.keep_seconds,
            settings.replay_seconds, job_id, *queue._job_fields(delivery_id, 1))

    steps: dict[str, Step] = {
        "PING, redis-py execute_command": lambda _: client.execute_command("PING"),
        "PING, ingress.autopipeline": lambda _: pipeline.execute("PING"),
        "delivery store, redis-py execute_command (before)": store_through_redis_py,
        "delivery store, DeliveryQueue.store (as shipped)": store_as_shipped,
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    try:
        for name, step in steps.items():  # warm every path once
            await _per_command(step, 200 if "store" not in name else 1)
        for _ in range(rounds):
            for name, step in steps.items():
                results[name].append(await _per_command(step, commands))
    finally:
        await queue.aclose()
        await pipeline.aclose()
        await client.aclose()
    return results


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    server = RedisServer()
    try:
        results = uvloop.run(_measure(server.url, args.commands, args.rounds))
    finally:
        server.stop()
    lines = [f"### One Redis command, awaited alone ({args.commands} per round, medians of {args.rounds} rounds)",
             "", "| path | CPU us per command | wall us per command |", "|---|---:|---:|"]
    for name, samples in results.items():
        cpu = statistics.median(c for c, _ in samples)
        wall = statistics.median(w for _, w in samples)
        lines.append(f"| {name} | {cpu:.0f} | {wall:.0f} |")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
