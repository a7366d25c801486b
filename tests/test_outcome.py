"""A run's one outcome from its actions' outcomes."""

from __future__ import annotations

from workers.errors import RunError
from workers.flow.outcome import worst


def test_a_run_every_action_skips_is_skipped() -> None:
    assert worst(["skipped", "skipped"]) == "skipped"
    assert worst([]) == "skipped"


def test_successes_rank_written_updated_unchanged_skipped() -> None:
    assert worst(["unchanged", "written", "skipped"]) == "written"
    assert worst(["unchanged", "updated"]) == "updated"
    assert worst(["skipped", "unchanged"]) == "unchanged"


def test_a_pending_action_beats_every_success() -> None:
    pending = RunError("adding the run to the annotation queue: LangSmith answered 503", transient=True)
    assert worst(["written", pending, "unchanged"]) is pending


def test_a_permanent_failure_beats_a_pending_one_whatever_the_order() -> None:
    pending = RunError("503", transient=True)
    failed = RunError("transform raised", transient=False)
    assert worst([pending, failed, "written"]) is failed
    assert worst([failed, pending]) is failed
