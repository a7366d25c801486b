"""Times as LangSmith is sent them: RFC 3339, always with an offset.

LangSmith's API reference types every time it takes (`start_time` of an annotation-queue item,
`min_start_time`/`max_start_time` of the v2 runs query) as `string` with `format: date-time`, which
OpenAPI defines as RFC 3339 `date-time`: the offset (`Z` or `+hh:mm`) is required. The webhook's
own example payload carries times without one (`"2024-04-05T01:28:54.085646"`, docs "Use
webhooks"), and the SDK's generated client sends a `datetime` as `isoformat()`, which for a naive
one has no offset either. LangSmith stores run times in UTC, so a time without an offset is UTC.
"""

from __future__ import annotations

import datetime as dt


def aware(moment: dt.datetime) -> dt.datetime:
    """The same instant with an offset; a naive time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def parse(text: str) -> dt.datetime:
    """An ISO 8601 / RFC 3339 time (`Z` accepted), naive read as UTC; ValueError when it is not one."""
    return aware(dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00")))


def rfc3339(value: str | dt.datetime) -> str:
    """The time as RFC 3339 with an offset, for LangSmith; ValueError when `value` is no time."""
    moment = parse(value) if isinstance(value, str) else aware(value)
    return moment.isoformat()
