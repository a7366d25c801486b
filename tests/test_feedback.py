import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from tests.support.stack import StandIn
from workers.build.feedback import correction_outputs, latest_scores
from workers.runtime import Runtime

T0 = dt.datetime(2024, 4, 5, 1, 0, tzinfo=dt.UTC)


@dataclass
class Fb:
    run_id: Any
    key: str = "correctness"
    score: Any = None
    correction: Any = None
    created_at: dt.datetime | None = T0
    modified_at: dt.datetime | None = None
    id: Any = None

    def __post_init__(self) -> None:
        self.id = self.id or uuid.uuid4()


def test_feedback_is_joined_to_runs_by_run_id_not_position(runtime: Runtime, standin: StandIn) -> None:
    a, b, bare = (str(uuid.uuid4()) for _ in range(3))
    standin.add_feedback([{"run_id": b, "key": "correctness", "score": 0},
                          {"run_id": a, "key": "correctness", "score": 1},
                          {"run_id": b, "key": "x", "score": 2}])
    found = runtime.run(runtime.langsmith.feedback([a, b, bare]))
    assert [f.score for f in found[a]] == [1]  # type: ignore[union-attr]
    assert sorted(f.score for f in found[b]) == [0, 2]  # type: ignore[union-attr]
    assert found[bare] == []


def test_run_without_feedback_has_no_correction() -> None:
    assert correction_outputs([]) is None
    assert correction_outputs([Fb("r", score=1)]) is None


def test_string_correction_becomes_output_dict() -> None:
    assert correction_outputs([Fb("r", correction="fixed")]) == {"output": "fixed"}


def test_dict_correction_is_used_as_is() -> None:
    assert correction_outputs([Fb("r", correction={"answer": 4})]) == {"answer": 4}


def test_latest_correction_by_modified_at_wins() -> None:
    old = Fb("r", correction="old", modified_at=T0 + dt.timedelta(minutes=5), created_at=T0 + dt.timedelta(hours=1))
    new = Fb("r", correction="new", modified_at=T0 + dt.timedelta(minutes=9), created_at=T0)
    assert correction_outputs([new, old]) == {"output": "new"}
    assert correction_outputs([old, new]) == {"output": "new"}


def test_tie_on_modified_at_falls_to_created_at_then_id() -> None:
    first = Fb("r", correction="a", modified_at=T0, created_at=T0, id="00000000-0000-0000-0000-000000000001")
    later = Fb("r", correction="b", modified_at=T0, created_at=T0 + dt.timedelta(seconds=1),
               id="00000000-0000-0000-0000-000000000000")
    assert correction_outputs([later, first]) == {"output": "b"}
    same_a = Fb("r", correction="low", modified_at=T0, created_at=T0, id="00000000-0000-0000-0000-00000000000a")
    same_b = Fb("r", correction="high", modified_at=T0, created_at=T0, id="00000000-0000-0000-0000-00000000000b")
    assert correction_outputs([same_b, same_a]) == {"output": "high"}
    assert correction_outputs([same_a, same_b]) == {"output": "high"}


def test_naive_and_aware_timestamps_compare() -> None:
    naive = Fb("r", correction="naive", modified_at=dt.datetime(2024, 4, 5, 2, 0))
    aware = Fb("r", correction="aware", modified_at=T0)
    assert correction_outputs([naive, aware]) == {"output": "naive"}


def test_null_corrections_are_ignored() -> None:
    newer_without = Fb("r", correction=None, modified_at=T0 + dt.timedelta(days=1))
    assert correction_outputs([Fb("r", correction="x"), newer_without]) == {"output": "x"}


def test_latest_score_per_key() -> None:
    items = [Fb("r", key="a", score=0, modified_at=T0), Fb("r", key="a", score=1, modified_at=T0 + dt.timedelta(1)),
             Fb("r", key="b", score=0.5)]
    assert latest_scores(items) == {"a": 1, "b": 0.5}


def test_evaluator_score_correction_is_not_a_reference_output() -> None:
    # A person correcting an evaluator's score: LangSmith stores {"score": ...} as the correction.
    assert correction_outputs([Fb("r", correction={"score": 1})]) is None
    assert correction_outputs([Fb("r", correction={"score": 0, "comment": "wrong label"})]) is None


def test_real_correction_wins_over_a_later_score_correction() -> None:
    later = T0 + dt.timedelta(hours=1)
    items = [Fb("r", correction={"label": "spam"}), Fb("r", correction={"score": 1}, modified_at=later)]
    assert correction_outputs(items) == {"label": "spam"}


def test_a_dict_correction_that_merely_has_a_score_key_among_others_is_outputs() -> None:
    assert correction_outputs([Fb("r", correction={"score": 3, "answer": "x"})]) == {"score": 3, "answer": "x"}
