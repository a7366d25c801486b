"""The libraries whose internals we copy or drive are pinned to the range their seam tests ran
against, and the installed one is inside it: a venv upgraded by hand (pip install -U) fails here
instead of in production."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# Library: how wide its pin may be (one minor or one major: what the seam tests ran against),
# and the tests that pin what we copy or drive of it.
SEAMS = {
    "langsmith": ("minor", "tests/test_sdk_copies.py, tests/test_query_backend.py"),
    "redis": ("major", "tests/test_autopipeline.py"),
    "rq": ("minor", "tests/test_rq_seams.py"),
}


def _requirements() -> dict[str, Requirement]:
    with PYPROJECT.open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    return {(r := Requirement(line)).name: r for line in dependencies}


@pytest.mark.parametrize("name", sorted(SEAMS))
def test_a_library_with_a_seam_is_pinned_to_one_tested_minor_or_major(name: str) -> None:
    width, seam_tests = SEAMS[name]
    requirement = _requirements()[name]
    bounds = {spec.operator: Version(spec.version) for spec in requirement.specifier}
    assert set(bounds) == {">=", "<"}, (str(requirement), seam_tests)
    low, high = bounds[">="], bounds["<"]
    one_step = Version(f"{low.major + 1}") if width == "major" else Version(f"{low.major}.{low.minor + 1}")
    assert high == one_step, (str(requirement), f"spans more than one {width}", seam_tests)


@pytest.mark.parametrize("name", sorted(SEAMS))
def test_the_installed_library_is_inside_its_pin(name: str) -> None:
    requirement = _requirements()[name]
    installed = metadata.version(name)
    assert requirement.specifier.contains(installed, prereleases=True), (name, installed, str(requirement))
