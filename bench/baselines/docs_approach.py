"""The docs' approach: one `list_feedback` for the delivery's runs, then per run, one by one,
fetch its inputs and outputs from their presigned URLs and call `client.create_example`.

    python -m bench.baselines.docs_approach DELIVERY.json DATASET

Env: LANGSMITH_ENDPOINT, LANGSMITH_API_KEY. Feedback is joined by run id (the docs' `zip`
pairs them wrongly; the request count is the same). Prints one JSON line with the time from
the first request to the last example (setup, i.e. client and dataset, not counted).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx
from langsmith import Client


def correction_of(items: list[Any]) -> dict[str, Any] | None:
    for item in items:
        if item.correction is not None:
            return item.correction if isinstance(item.correction, dict) else {"output": item.correction}
    return None


def main(path: str, dataset: str) -> None:
    delivery = json.loads(open(path, "rb").read())
    runs = delivery["runs"]
    client = Client(auto_batch_tracing=False)
    dataset_id = client.create_dataset(dataset).id
    http = httpx.Client(timeout=30)
    start, cpu = time.perf_counter(), time.process_time()
    feedback: dict[str, list[Any]] = {}
    for item in client.list_feedback(run_ids=[r["id"] for r in runs]):
        feedback.setdefault(str(item.run_id), []).append(item)
    for run in runs:
        items = feedback.get(run["id"], [])
        inputs = run["inputs"] or http.get(run["inputs_s3_urls"]["ROOT"]["presigned_url"]).json()
        outputs = correction_of(items)
        if outputs is None:
            outputs = run["outputs"] or http.get(run["outputs_s3_urls"]["ROOT"]["presigned_url"]).json()
        client.create_example(inputs=inputs, reference_outputs=outputs, dataset_id=dataset_id,
                              source_run_id=run["id"],
                              metadata={"run_id": run["id"], "feedback": {f.key: f.score for f in items}})
    elapsed = time.perf_counter() - start
    print(json.dumps({"runs": len(runs), "seconds": elapsed, "cpu_s": time.process_time() - cpu}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
