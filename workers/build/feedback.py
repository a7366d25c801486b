"""Which of a run's feedback wins: its correction as reference outputs, its latest scores.

Feedback reaches a run by `feedback.run_id`, never by position (LangSmith.feedback, workers/langsmith/door.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Protocol

_EPOCH = dt.datetime.min.replace(tzinfo=dt.UTC)


class FeedbackLike(Protocol):
    id: Any
    run_id: Any
    key: str
    score: Any
    correction: Any
    created_at: dt.datetime | None
    modified_at: dt.datetime | None


def _aware(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return _EPOCH
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def recency(item: FeedbackLike) -> tuple[dt.datetime, dt.datetime, str]:
    """Latest by modified_at, then created_at, then id (docs/rules.md: What one run becomes)."""
    return (_aware(item.modified_at), _aware(item.created_at), str(item.id))


# When a person corrects an evaluator's score, LangSmith stores the corrected score as the
# feedback's correction ({"score": ...}, sometimes with "value"/"comment"). That is a judgement
# of the run, not what the run should have answered, so it never becomes reference outputs.
_SCORE_CORRECTION_KEYS = frozenset({"score", "value", "comment"})


def is_score_correction(correction: Any) -> bool:
    return (isinstance(correction, dict) and bool(correction) and set(correction) <= _SCORE_CORRECTION_KEYS
            and ("score" in correction or "value" in correction))


def correction_outputs(items: Iterable[FeedbackLike]) -> dict[str, Any] | None:
    """The latest non-null correction as example outputs: a string becomes {"output": s}.
    Evaluator score corrections are not reference outputs and are passed over."""
    corrections = [item for item in items if item.correction is not None and not is_score_correction(item.correction)]
    if not corrections:
        return None
    latest = max(corrections, key=recency).correction
    if isinstance(latest, dict):
        return latest
    return {"output": latest}


def latest_scores(items: Iterable[FeedbackLike]) -> dict[str, Any]:
    """{key: score of that key's latest feedback}, for the example's metadata."""
    latest: dict[str, FeedbackLike] = {}
    for item in items:
        current = latest.get(item.key)
        if current is None or recency(item) > recency(current):
            latest[item.key] = item
    return {key: item.score for key, item in sorted(latest.items())}


def plain_item(item: Any) -> dict[str, Any]:
    """A feedback item as a transform sees it (a run's or a thread's last turn's): plain JSON values."""
    fields = ("id", "run_id", "key", "score", "value", "comment", "correction", "created_at", "modified_at")
    out = {name: getattr(item, name, None) for name in fields}
    for name in ("id", "run_id"):
        out[name] = str(out[name]) if out[name] is not None else None
    for name in ("created_at", "modified_at"):
        moment = out[name]
        out[name] = moment.isoformat() if moment is not None else None
    return out
