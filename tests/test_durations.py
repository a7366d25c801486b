"""Durations as operators write them (LSWH_RECONCILE_*, `--since`)."""

from __future__ import annotations

import pytest

from lswh_core.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7_200), ("7d", 604_800),
                                               ("45", 45), ("1.5m", 90), (" 10M ", 600)])
def test_a_duration_is_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-5m", "quarter-hour", "15 minutes", "2w"])
def test_anything_else_is_refused_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"longer than zero|use e\.g\. 30s, 15m"):
        parse_duration(text)
