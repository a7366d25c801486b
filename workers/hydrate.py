"""A run's inputs and outputs: inline, else the presigned URL, else the LangSmith API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from workers import s3
from workers.errors import RunError, classify
from workers.runtime import S3_CONCURRENCY, SDK_THREADS, Runtime


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
class Hydrator:
    """Per job: shares one semaphore for the object store and one API read per run."""

    runtime: Runtime
    semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(S3_CONCURRENCY))
    api_semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SDK_THREADS))
    _api_reads: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    async def _read_run(self, run_id: str) -> Any:
        """The run through the API, once per run even when inputs and outputs both need it."""
        if run_id not in self._api_reads:
            self._api_reads[run_id] = asyncio.ensure_future(self._read_run_now(run_id))
        return await asyncio.shield(self._api_reads[run_id])

    async def _read_run_now(self, run_id: str) -> Any:
        async with self.api_semaphore:
            try:
                return await self.runtime.call(self.runtime.client.read_run, run_id)
            except Exception as exc:
                error = classify(exc, "reading the run through the API")
                if not error.transient:
                    return None  # not found (or refused): the caller decides what missing means
                raise error from None

    async def _from_url(self, run: dict[str, Any], name: str) -> dict[str, Any] | None:
        url = presigned_url(run, f"{name}_s3_urls")
        if url is None or not s3.allowed(url, self.runtime.rules):
            return None
        async with self.semaphore:
            try:
                return await s3.fetch_json(self.runtime.http, url, name)  # type: ignore[no-any-return]
            except s3.ObjectUnusable:
                return None

    async def _without_api(self, run: dict[str, Any], name: str) -> dict[str, Any] | None:
        """Inline when non-null (even {}), else the presigned object; None: ask the API."""
        value = inline(run, name)
        return value if value is not None else await self._from_url(run, name)

    async def inputs(self, run: dict[str, Any]) -> dict[str, Any]:
        value = await self._without_api(run, "inputs")
        if value is not None:
            return value
        api_run = await self._read_run(str(run["id"]))
        if api_run is None:
            raise RunError("inputs: no inline inputs, no usable presigned URL, and the run is not "
                           "readable through the API", transient=False)
        self._fill_from_api(run, api_run)
        return dict(api_run.inputs or {})

    async def outputs(self, run: dict[str, Any]) -> dict[str, Any] | None:
        value = await self._without_api(run, "outputs")
        if value is not None:
            return value
        api_run = await self._read_run(str(run["id"]))
        if api_run is None:
            return None  # a run with no outputs anywhere still becomes an example
        self._fill_from_api(run, api_run)
        return dict(api_run.outputs) if api_run.outputs else None

    @staticmethod
    def _fill_from_api(run: dict[str, Any], api_run: Any) -> None:
        """A requeued run whose delivery expired knows only its id: take the rest from the API."""
        if not run.get("trace_id") and getattr(api_run, "trace_id", None):
            run["trace_id"] = str(api_run.trace_id)
        if not run.get("name") and getattr(api_run, "name", None):
            run["name"] = api_run.name
