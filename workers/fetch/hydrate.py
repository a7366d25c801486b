"""A run's inputs and outputs: inline, else the presigned URL, else (in bulk) the LangSmith API."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from workers.bookkeeping import metrics
from workers.errors import RunError
from workers.fetch import s3
from workers.langsmith.door import ApiRun
from workers.runtime import S3_CONCURRENCY, Runtime


def presigned_url(run: dict[str, Any], field_name: str) -> str | None:
    urls = run.get(field_name)
    if not isinstance(urls, dict):
        return None
    root = urls.get("ROOT")
    if not isinstance(root, dict):
        return None
    url = root.get("presigned_url")
    return url if isinstance(url, str) and url else None


def inline(run: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = run.get(name)
    return value if isinstance(value, dict) else None


@dataclass
class Hydrated:
    """What one run has so far: a value per field, the fields only the API can give, an error."""

    run: dict[str, Any]
    values: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    from_api: set[str] = field(default_factory=set)
    error: RunError | None = None
    bytes: int = 0

    @property
    def id(self) -> str:
        return str(self.run["id"])


def settle_from_api(item: Hydrated, api: ApiRun | RunError | None) -> None:
    """Fill the fields only the API has. Outputs are null only when LangSmith returns the run
    with outputs null; a run it refuses or does not return fails (unknown is not null)."""
    if not item.from_api or item.error is not None:
        return
    if isinstance(api, RunError):
        item.error = api
        return
    if api is None:
        item.error = RunError(f"{' and '.join(sorted(item.from_api))}: no inline value, no usable presigned URL, "
                              "and the API did not return the run", transient=False)
        return
    if "inputs" in item.from_api:
        item.values["inputs"] = api.inputs or {}
    if "outputs" in item.from_api:
        item.values["outputs"] = api.outputs
    # A run requeued after its delivery expired knows little more than its id.
    if not item.run.get("trace_id") and api.trace_id:
        item.run["trace_id"] = api.trace_id
    if not item.run.get("name") and api.name:
        item.run["name"] = api.name


class Hydrator:
    """Per slice: fetch presigned objects (bounded concurrency) and note what needs the API."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.semaphore = asyncio.Semaphore(S3_CONCURRENCY)

    async def _from_url(self, run: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, int]:
        url = presigned_url(run, f"{name}_s3_urls")
        if url is None or not s3.allowed(url, self.runtime.s3_hosts):
            return None, 0
        async with self.semaphore:
            started = time.perf_counter()
            status = "200"
            try:
                value, size = await self.runtime.objects.fetch_json(url, name)
            except s3.ObjectUnusable:
                status = "unusable"
                return None, 0
            except RunError as exc:
                status = "transient" if exc.transient else "refused"
                raise
            finally:
                metrics.observe_request("s3", "GET object", status, time.perf_counter() - started)
        return value, size

    async def without_api(self, item: Hydrated, names: tuple[str, ...]) -> Hydrated:
        """Inline when non-null (even {}), else the presigned object; else the field is left for
        the API. An object store failure (transient or not) is the run's error."""
        for name in names:
            value = inline(item.run, name)
            if value is not None:
                item.values[name] = value
                continue
            try:
                value, size = await self._from_url(item.run, name)
            except RunError as exc:
                item.error = exc
                return item
            if value is None:
                item.from_api.add(name)
            else:
                item.values[name] = value
                item.bytes += size
        return item
