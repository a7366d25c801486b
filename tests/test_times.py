"""Every time sent to LangSmith is RFC 3339 with an offset (lswh_core/times.py)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from lswh_core.times import aware, parse, rfc3339

# RFC 3339 section 5.6 date-time: the offset is not optional.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def test_a_naive_webhook_time_is_sent_as_utc() -> None:
    # The docs' webhook example payload: no timezone.
    assert rfc3339("2024-04-05T01:28:54.085646") == "2024-04-05T01:28:54.085646+00:00"


@pytest.mark.parametrize(("given", "sent"), [
    ("2024-04-05T01:28:54.085646Z", "2024-04-05T01:28:54.085646+00:00"),
    ("2024-04-05T03:28:54+02:00", "2024-04-05T03:28:54+02:00"),
    (" 2024-04-05T01:28:54 ", "2024-04-05T01:28:54+00:00"),
])
def test_a_time_with_an_offset_keeps_its_instant(given: str, sent: str) -> None:
    assert rfc3339(given) == sent
    assert parse(given) == parse(sent)


def test_datetimes_naive_or_aware_come_out_with_an_offset() -> None:
    naive = dt.datetime(2026, 8, 1, 12, 0, 0)
    assert RFC3339.match(rfc3339(naive))
    assert aware(naive) == dt.datetime(2026, 8, 1, 12, tzinfo=dt.UTC)
    tokyo = dt.datetime(2026, 8, 1, 21, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert rfc3339(tokyo) == "2026-08-01T21:00:00+09:00"


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01T00:00:00"])
def test_a_value_that_is_no_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        rfc3339(text)
