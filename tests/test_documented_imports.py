"""Every Python name the docs give users resolves: a module moved inside `workers/` must keep the
paths users import (`workers.transforms.HydratedRun`, `workers.actions.jsonl.read_jsonl`) and the
names RQ stores and shows (`workers.jobs.RunFailed`, the job functions named in lswh_core.contract),
so jobs queued before an upgrade still run and `lswh requeue --reason` still matches."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from lswh_core import contract

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "bench" / "README.md"])
PACKAGES = ("workers", "ingress", "lswh_core", "lswh")
# `workers.transforms.HydratedRun`, `ingress.app:app`, `workers.actions.jsonl.read_jsonl(directory, dataset)`
PACKAGE = "|".join(PACKAGES)
DOTTED = re.compile(rf"`((?:{PACKAGE})(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?)(?:\([^`]*\))?`")


def resolve(name: str) -> Any:
    """The object a dotted name (optionally `module:attr`) names: the longest importable module
    prefix, then attributes."""
    module_part, _, attr = name.partition(":")
    parts = module_part.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for part in parts[cut:] + ([attr] if attr else []):
            obj = getattr(obj, part)
        return obj
    raise ModuleNotFoundError(name)


def documented_names() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for match in DOTTED.finditer(doc.read_text()):
            found.append((doc.relative_to(ROOT).as_posix(), match.group(1)))
    return sorted(set(found))


def test_the_docs_name_python_objects() -> None:
    names = {name for _, name in documented_names()}
    # If the pattern stopped matching, every test below would pass on nothing.
    assert {"workers.transforms.HydratedRun", "workers.actions.jsonl.read_jsonl"} <= names


@pytest.mark.parametrize(("doc", "name"), documented_names())
def test_every_documented_name_resolves(doc: str, name: str) -> None:
    try:
        resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{doc} names `{name}`, which does not resolve: {exc}")


@pytest.mark.parametrize("job", [contract.DELIVERY_JOB, contract.RUN_JOB, contract.THREAD_JOB, contract.RECONCILE_JOB])
def test_job_functions_named_in_the_contract_stay_importable(job: str) -> None:
    """RQ stores the dotted name in each job; a queued job must run after an upgrade."""
    assert callable(resolve(job))


def test_the_job_exceptions_keep_the_name_rq_shows() -> None:
    """rq-dashboard and `lswh requeue --reason` show and match `workers.jobs.RunFailed: ...`."""
    for name in ("RunFailed", "RunsPending", "DeliveryFailed", "DeliveryRefused", "ThreadFailed"):
        cls = resolve(f"workers.jobs.{name}")
        assert f"{cls.__module__}.{cls.__qualname__}" == f"workers.jobs.{name}"


def test_transform_signature_is_the_documented_one() -> None:
    """docs/rules.md: a transform is called with one HydratedRun (or HydratedThread), a TypedDict
    whose keys the docs list, and returns a dict, a list of dicts or None."""
    transforms = importlib.import_module("workers.transforms")
    for name in ("HydratedRun", "HydratedThread", "HydratedTurn", "ExampleDraft", "TransformError"):
        assert inspect.isclass(getattr(transforms, name)), name
    documented = {"id", "trace_id", "name", "run_type", "rule_id", "inputs", "outputs", "run_outputs",
                  "correction", "feedback", "metadata", "run"}
    assert set(transforms.HydratedRun.__annotations__) == documented
    assert {"turns", "thread_id", "inputs", "outputs", "metadata"} <= set(transforms.HydratedThread.__annotations__)
