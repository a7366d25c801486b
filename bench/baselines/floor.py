"""The floor: only the I/O a delivery needs, as fast as asyncio can do it. No queue, no
per-run logic, no idempotency checks.

    python -m bench.baselines.floor DELIVERY.json DATASET [--concurrency 32] [--transport httpx|aiohttp]

The same S3 GETs as the pipeline (every run's inputs at once with the feedback listing; then
the outputs of runs without a correction) at a fixed concurrency, the feedback listing in
chunks of 100 run ids in parallel, and the examples written by the SDK's `create_examples`
in batches of 200 in parallel. The S3 GETs go through httpx's own pool (`--transport httpx`)
or through the worker's own fetcher, `workers.fetch.s3.ObjectStore` on aiohttp (`--transport aiohttp`).
Env: LANGSMITH_ENDPOINT, LANGSMITH_API_KEY. Prints one JSON
line with the time from the first request to the last example (client and dataset setup
not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx
from langsmith import Client

from workers.fetch.s3 import ObjectStore

FEEDBACK_CHUNK = 100
WRITE_BATCH = 200


async def run(path: str, dataset: str, concurrency: int, transport: str = "httpx") -> dict[str, Any]:
    runs = json.loads(open(path, "rb").read())["runs"]
    client = Client(auto_batch_tracing=False)
    dataset_id = (await asyncio.to_thread(client.create_dataset, dataset)).id
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    # aiohttp: the worker's own fetcher, so the floor pays the same per-request cost as ours;
    # httpx: httpx's own pool (the reference). The stand-in serves the objects on
    # loopback, which the worker's fetcher refuses unless named exactly.
    store = ObjectStore(max_connections=concurrency, exact_hosts=["127.0.0.1"]) if transport == "aiohttp" else None
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def get(url: str) -> Any:
            async with semaphore:
                if store is not None:
                    return (await store.fetch_json(url, "object"))[0]
                response = await http.get(url)
            return response.json()

        def list_feedback(ids: list[str]) -> list[Any]:
            return list(client.list_feedback(run_ids=ids))

        start, cpu = time.perf_counter(), time.process_time()
        ids = [r["id"] for r in runs]
        inputs = [asyncio.ensure_future(get(r["inputs_s3_urls"]["ROOT"]["presigned_url"])) for r in runs]
        pages = await asyncio.gather(*(asyncio.to_thread(list_feedback, ids[i:i + FEEDBACK_CHUNK])
                                       for i in range(0, len(ids), FEEDBACK_CHUNK)))
        corrections = {str(f.run_id): f.correction if isinstance(f.correction, dict) else {"output": f.correction}
                       for page in pages for f in page if f.correction is not None}
        outputs = {r["id"]: asyncio.ensure_future(get(r["outputs_s3_urls"]["ROOT"]["presigned_url"]))
                   for r in runs if r["id"] not in corrections}
        examples = []
        for run_, inputs_task in zip(runs, inputs, strict=True):
            out = corrections.get(run_["id"])
            examples.append({"inputs": await inputs_task,
                             "reference_outputs": out if out is not None else await outputs[run_["id"]],
                             "source_run_id": run_["id"]})
        await asyncio.gather(*(asyncio.to_thread(client.create_examples, dataset_id=dataset_id,
                                                 examples=examples[i:i + WRITE_BATCH])
                               for i in range(0, len(examples), WRITE_BATCH)))
        elapsed = time.perf_counter() - start
    if store is not None:
        await store.close()
    return {"runs": len(runs), "seconds": elapsed, "concurrency": concurrency, "cpu_s": time.process_time() - cpu,
            "s3_gets": len(inputs) + len(outputs), "transport": transport}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("delivery")
    parser.add_argument("dataset")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--transport", choices=("httpx", "aiohttp"), default="httpx",
                        help="aiohttp: workers.fetch.s3.ObjectStore, the worker's own fetcher")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio",
                        help="asyncio by default: the worker's I/O loop is asyncio's own")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(run(args.delivery, args.dataset, args.concurrency, args.transport))
    else:
        result = asyncio.run(run(args.delivery, args.dataset, args.concurrency, args.transport))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
