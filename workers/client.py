"""The LangSmith SDK client, with its own retries bounded (SPEC: failure semantics).

The SDK retries 429/5xx itself and would sleep out a Retry-After of hours inside a job. Here
urllib3 retries at most twice with short backoff, never sleeps a Retry-After over
MAX_SLEPT_RETRY_AFTER, and a final transient answer is raised as LangSmithUnavailable from the
session, before the SDK's own retry loop could sleep on it.
"""

from __future__ import annotations

import os
from typing import Any

import requests
from langsmith import Client
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from workers.errors import TRANSIENT_STATUSES, LangSmithUnavailable, parse_retry_after

MAX_SLEPT_RETRY_AFTER = 10.0
TIMEOUT_MS = (5_000, 30_000)


class BoundedRetry(Retry):
    """urllib3 retry that gives up at once when asked to wait longer than we sleep in a job."""

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> BoundedRetry:
        if response is not None:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > MAX_SLEPT_RETRY_AFTER:
                raise MaxRetryError(_pool, url or "", ResponseError("Retry-After too long to sleep"))
        return super().increment(method, url, response, error, _pool, _stacktrace)


def bounded_retry() -> BoundedRetry:
    return BoundedRetry(
        total=2,
        backoff_factor=0.5,
        backoff_max=4,
        status_forcelist=sorted(TRANSIENT_STATUSES),
        allowed_methods=None,  # our writes are idempotent: deterministic ids, 409 handled
        raise_on_redirect=False,
        raise_on_status=False,
        respect_retry_after_header=True,
    )


def _raise_transient(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if response.status_code in TRANSIENT_STATUSES:
        raise LangSmithUnavailable(response.status_code, parse_retry_after(response.headers.get("Retry-After")))


def make_client(api_url: str | None = None, api_key: str | None = None) -> Client:
    session = requests.Session()
    session.hooks["response"].append(_raise_transient)
    return Client(
        api_url=api_url or os.environ.get("LANGSMITH_ENDPOINT") or None,
        api_key=api_key or os.environ.get("LANGSMITH_API_KEY") or None,
        retry_config=bounded_retry(),
        timeout_ms=TIMEOUT_MS,
        session=session,
        auto_batch_tracing=False,
    )
