"""Splits: a pure function of the run id and the weights."""

from __future__ import annotations

import subprocess
import sys
import uuid

from hypothesis import given
from hypothesis import strategies as st

from tests.support.procs import ROOT
from workers.build.splits import assign_split, split_point

EIGHTY_TWENTY = (("train", 0.8), ("test", 0.2))


def run_ids(n: int) -> list[str]:
    # Deterministic ids, so a failure reproduces.
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"run-{i}")) for i in range(n)]


@given(st.uuids())
def test_the_same_run_always_lands_in_the_same_split(run_id):
    assert assign_split(str(run_id), EIGHTY_TWENTY) == assign_split(str(run_id), EIGHTY_TWENTY)


def test_another_process_assigns_every_run_the_same_split():
    ids = run_ids(200)
    code = ("import sys; from workers.build.splits import assign_split; "
            "print(' '.join(assign_split(i, (('train', 0.8), ('test', 0.2))) for i in sys.argv[1:]))")
    # PYTHONHASHSEED differs per process: the split must not depend on Python's hash().
    out = subprocess.run([sys.executable, "-c", code, *ids], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345"}, cwd=ROOT).stdout.split()
    assert out == [assign_split(i, EIGHTY_TWENTY) for i in ids]


def test_the_order_the_splits_are_listed_in_does_not_matter():
    ids = run_ids(500)
    reordered = tuple(reversed(EIGHTY_TWENTY))
    assert [assign_split(i, EIGHTY_TWENTY) for i in ids] == [assign_split(i, reordered) for i in ids]


def test_a_uuid_spelled_differently_is_the_same_run():
    run_id = run_ids(1)[0]
    assert split_point(run_id.upper()) == split_point(run_id) == split_point(run_id.replace("-", ""))


def test_weights_give_the_shares_of_runs():
    ids = run_ids(20_000)
    shares = [assign_split(i, EIGHTY_TWENTY) for i in ids]
    assert abs(shares.count("train") / len(ids) - 0.8) < 0.015
    three = (("train", 0.7), ("validation", 0.1), ("test", 0.2))
    counts = {name: 0 for name, _ in three}
    for i in ids:
        counts[assign_split(i, three)] += 1
    assert abs(counts["validation"] / len(ids) - 0.1) < 0.01 and abs(counts["test"] / len(ids) - 0.2) < 0.015


def test_a_single_split_takes_every_run_and_weights_rounding_below_one_lose_none():
    ids = run_ids(1000)
    assert {assign_split(i, (("all", 1.0),)) for i in ids} == {"all"}
    thirds = (("a", 1 / 3), ("b", 1 / 3), ("c", 1 / 3))  # sums to 0.999... in floats
    assert {assign_split(i, thirds) for i in ids} == {"a", "b", "c"}
    assert assign_split("x", (("a", 0.5), ("b", 0.5 - 1e-12))) in {"a", "b"}


@given(st.text(min_size=1))
def test_any_run_id_text_gets_a_point_in_the_unit_interval(run_id):
    assert 0.0 <= split_point(run_id) < 1.0
