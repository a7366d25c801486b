"""A run's one outcome from its actions' outcomes (pure).

A run can go to several actions; the delivery's accounting counts it once, as the worst of them:
failed > pending (transient, retried) > written > updated > unchanged > skipped. So a run is
"skipped" only when every action skipped it (nothing is lost), and a run with one action still
failing is not counted done.
"""

from __future__ import annotations

from collections.abc import Iterable

from workers.actions.dataset_writer import SKIPPED, UNCHANGED, UPDATED, WRITTEN, Outcome
from workers.errors import RunError

_RANK = {SKIPPED: 0, UNCHANGED: 1, UPDATED: 2, WRITTEN: 3}


def worst(outcomes: Iterable[Outcome]) -> Outcome:
    """The run's outcome; an action's permanent failure beats a transient one (it will not heal
    by waiting), and any failure beats every success. No outcomes at all: skipped."""
    chosen: Outcome = SKIPPED
    for outcome in outcomes:
        if isinstance(outcome, RunError):
            if not isinstance(chosen, RunError) or (chosen.transient and not outcome.transient):
                chosen = outcome
        elif not isinstance(chosen, RunError) and _RANK[outcome] > _RANK[chosen]:
            chosen = outcome
    return chosen
