"""What a failure means: retry later (transient) or fail the run now (permanent)."""

from __future__ import annotations

import requests
from langsmith import utils as ls_utils

from lswh_core.redact import redact

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class RunError(Exception):
    """One run (or one batch of runs) could not be processed. `reason` is safe to store."""

    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = redact(reason)
        self.transient = transient
        self.retry_after = retry_after


class LangSmithUnavailable(Exception):
    """Raised from the SDK's session for a final transient answer, so the SDK never sleeps out
    a long Retry-After itself and we learn the status and the delay it asked for."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"LangSmith answered {status}")
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LangSmith; fall back to our backoff


def classify(exc: BaseException, doing: str) -> RunError:
    """Turn any exception from the SDK, httpx or our code into a RunError with a clean reason."""
    if isinstance(exc, RunError):
        return exc
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, LangSmithUnavailable):
            return RunError(f"{doing}: LangSmith answered {cause.status}", transient=True,
                            retry_after=cause.retry_after)
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, ls_utils.LangSmithRateLimitError):
        return RunError(f"{doing}: LangSmith rate limit", transient=True)
    if isinstance(exc, ls_utils.LangSmithConnectionError | ls_utils.LangSmithRequestTimeout
                  | ls_utils.LangSmithAPIError | requests.ConnectionError | requests.Timeout
                  | ConnectionError | TimeoutError):
        return RunError(f"{doing}: {type(exc).__name__}", transient=True)
    if isinstance(exc, ls_utils.LangSmithAuthError):
        return RunError(f"{doing}: LangSmith rejected the API key", transient=False)
    if isinstance(exc, ls_utils.LangSmithNotFoundError):
        return RunError(f"{doing}: not found in LangSmith", transient=False)
    if isinstance(exc, ls_utils.LangSmithError):
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return RunError(f"{doing}: {first_line[:300]}", transient=False)
    return RunError(f"{doing}: {type(exc).__name__}: {str(exc)[:300]}", transient=False)
