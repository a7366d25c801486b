"""Durations as operators write them: `30s`, `15m`, `2h`, `7d`, or a plain number of seconds.

Used by the settings (LSWH_RECONCILE_EVERY, LSWH_RECONCILE_GRACE) and by the CLI's `--since`.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds; ValueError (saying what is accepted) for anything else, zero and negatives included."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h, 7d, or seconds)")
    seconds = float(match["n"]) * _UNITS[match["unit"] or "s"]
    if seconds <= 0:
        raise ValueError(f"a duration must be longer than zero, got {text!r}")
    return seconds
