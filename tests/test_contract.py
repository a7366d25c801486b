"""The job contract (pure): ids RQ accepts whatever run ids a delivery carries."""

from __future__ import annotations

import uuid

import pytest
from rq.job import JOB_ID_PATTERN

from lswh_core.contract import run_job_id

DELIVERY = "0" * 32


def test_a_langsmith_run_id_names_its_job() -> None:
    run_id = str(uuid.uuid4())
    assert run_job_id(DELIVERY, run_id) == f"run-{run_id}-{DELIVERY}"


@pytest.mark.parametrize("run_id", ["r-secret=abc+/=", "a b", "ü", "x" * 500, "run/../x", "{'a': 1}"])
def test_any_run_id_the_ingress_accepts_makes_a_job_id_rq_accepts(run_id: str) -> None:
    job_id = run_job_id(DELIVERY, run_id)
    assert JOB_ID_PATTERN.fullmatch(job_id), job_id
    assert run_id not in job_id
    assert run_job_id(DELIVERY, run_id) == job_id  # the same run always has the same job
