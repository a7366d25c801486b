"""What a failure means: retry later (transient) or fail the run now (permanent).

`classify` reads the failures of the LangSmith door only: the SDK's `requests` stack (and the
urllib3 / http.client errors under it), the v2 client's httpx2 stack and the SDK's own error
classes, ours (LangSmithUnavailable, InfoUnknown) and Python's connection errors. Presigned
object fetches classify their own few failures where they are made (workers/fetch/s3.py `fetch_json`)."""

from __future__ import annotations

import http.client

import httpx2
import requests
import urllib3.exceptions
from langsmith import APIConnectionError, APIError, APIStatusError
from langsmith import utils as ls_utils

from lswh_core.redact import redact

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class RunError(Exception):
    """One run (or one batch of runs) could not be processed. `reason` is safe to store."""

    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None,
                 splittable: bool = True) -> None:
        super().__init__(reason)
        self.reason = redact(reason)
        self.transient = transient
        self.retry_after = retry_after
        # False when the refusal is not any item's fault (e.g. the endpoint itself is missing):
        # splitting the batch to find the items at fault would only repeat it.
        self.splittable = splittable


class LangSmithUnavailable(Exception):
    """Raised from the SDK's session for a final transient answer, so the SDK never sleeps out
    a long Retry-After itself and we learn the status and the delay it asked for."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"LangSmith answered {status}")
        self.status = status
        self.retry_after = retry_after


class InfoUnknown(Exception):
    """LangSmith's `/info` has not been read: what depends on it (the query backend, the examples
    path) waits for it (transient) instead of guessing the server (workers/langsmith/door.py)."""

    def __init__(self, cause: BaseException | None = None) -> None:
        why = ""
        if cause is not None:
            first = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
            why = f" ({type(cause).__name__}{': ' + first if first else ''})"
        super().__init__(f"LangSmith /info could not be read{why}; waiting for it rather than guessing the server")


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LangSmith; fall back to our backoff


# A connection that broke before or while the answer arrived: nothing says the request was
# wrong, so it is worth sending again. The SDK wraps some of these (a reset mid-response reaches
# it as requests' ChunkedEncodingError) in a plain LangSmithError, so the chain is searched.
_BROKEN_CONNECTION = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                      urllib3.exceptions.ProtocolError, http.client.IncompleteRead, httpx2.TransportError,
                      ConnectionError, TimeoutError)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def _generated(exc: BaseException, doing: str) -> RunError | None:
    """The v2 (generated) client's own error classes, which are not LangSmithError."""
    if isinstance(exc, APIStatusError):
        status = exc.status_code
        retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
        if status in TRANSIENT_STATUSES:
            return RunError(f"{doing}: LangSmith answered {status}", transient=True, retry_after=retry_after)
        if status == 401:
            return RunError(f"{doing}: LangSmith rejected the API key", transient=False)
        if status == 404:
            return RunError(f"{doing}: not found in LangSmith", transient=False)
        return RunError(f"{doing}: LangSmith answered {status}", transient=False)
    if isinstance(exc, APIConnectionError):  # timeouts included
        return RunError(f"{doing}: {type(exc).__name__}", transient=True)
    if isinstance(exc, APIError):  # e.g. a response that does not validate
        return RunError(f"{doing}: {type(exc).__name__}", transient=False)
    return None


def classify(exc: BaseException, doing: str) -> RunError:
    """Turn any exception from the SDK, httpx2 or our code into a RunError with a clean reason."""
    if isinstance(exc, RunError):
        return exc
    chain = _causes(exc)
    if isinstance(exc, InfoUnknown):
        return RunError(f"{doing}: {exc}", transient=True)
    for cause in chain:
        if isinstance(cause, LangSmithUnavailable):
            return RunError(f"{doing}: LangSmith answered {cause.status}", transient=True,
                            retry_after=cause.retry_after)
    generated_error = _generated(exc, doing)
    if generated_error is not None:
        return generated_error
    for cause in chain:
        if isinstance(cause, _BROKEN_CONNECTION):
            return RunError(f"{doing}: connection broken ({type(cause).__name__})", transient=True)
    if isinstance(exc, ls_utils.LangSmithRateLimitError):
        return RunError(f"{doing}: LangSmith rate limit", transient=True)
    if isinstance(exc, ls_utils.LangSmithConnectionError | ls_utils.LangSmithRequestTimeout
                  | ls_utils.LangSmithAPIError):
        return RunError(f"{doing}: {type(exc).__name__}", transient=True)
    if isinstance(exc, ls_utils.LangSmithAuthError):
        return RunError(f"{doing}: LangSmith rejected the API key", transient=False)
    if isinstance(exc, ls_utils.LangSmithNotFoundError):
        return RunError(f"{doing}: not found in LangSmith", transient=False)
    if isinstance(exc, ls_utils.LangSmithError):
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return RunError(f"{doing}: {first_line[:300]}", transient=False)
    return RunError(f"{doing}: {type(exc).__name__}: {str(exc)[:300]}", transient=False)
