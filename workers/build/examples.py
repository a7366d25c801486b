"""What one run becomes: a deterministic example id and the example's fields (pure)."""

from __future__ import annotations

import uuid
from typing import Any

# Fixed forever: changing it would duplicate every example ever written.
EXAMPLE_NAMESPACE = uuid.UUID("5d0f4d3e-8b7a-4c55-9a3e-6f1f2f6b9c01")


def example_id(dataset_id: str, run_id: str) -> str:
    """One example per (dataset, run), however often the run arrives."""
    return str(uuid.uuid5(EXAMPLE_NAMESPACE, f"{dataset_id}:{run_id}"))


def example_metadata(run: dict[str, Any], rule_id: str | None, scores: dict[str, Any]) -> dict[str, Any]:
    """The metadata keys the pipeline owns on an example (an update changes only these)."""
    return {
        "rule_id": rule_id,
        "run_id": str(run["id"]),
        "trace_id": run.get("trace_id"),
        "run_name": run.get("name"),
        "feedback": scores,
    }


def _jsonish(value: Any) -> Any:
    """Compare what LangSmith stored with what we would write, ignoring uuid-vs-str noise."""
    if isinstance(value, dict):
        return {str(k): _jsonish(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonish(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def differs(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the stored example must be updated: inputs, outputs or our metadata keys changed.
    Metadata keys that LangSmith or a person added are left alone."""
    if _jsonish(existing.get("inputs") or {}) != _jsonish(wanted["inputs"] or {}):
        return True
    if _jsonish(existing.get("outputs") or None) != _jsonish(wanted["outputs"] or None):
        return True
    stored_meta = existing.get("metadata") or {}
    return any(_jsonish(stored_meta.get(k)) != _jsonish(v) for k, v in wanted["metadata"].items())


def merged_metadata(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """What an update must send: LangSmith replaces metadata whole, so the stored metadata with
    our keys changed. Keys someone else added, and the split (`dataset_split`), survive."""
    return {**(existing.get("metadata") or {}), **ours}
