"""Is this body a LangSmith delivery we can process later? Decided here, before it is stored."""

from __future__ import annotations

import json
from typing import Any

import orjson

MAX_DEPTH = 256
# Integers beyond 64 bits cannot be stored faithfully downstream (orjson turns them into floats).
_INT_LIMIT = 2**64
# 10**19 < 2**64 < 10**20: an integer literal beyond 64 bits shows as 20 digits in a row.
_DIGITS_AS_ZEROS = bytes.maketrans(b"0123456789", b"0" * 10)
_TWENTY_DIGITS = b"0" * 20
_OBJECT_FIELDS = ("inputs", "outputs", "inputs_s3_urls", "outputs_s3_urls")


class BadDelivery(ValueError):
    """The body is not a delivery: answered 400, never stored."""


def threads_in(doc: dict[str, Any]) -> int | None:
    """How many threads a thread rule's delivery carries (`threads` a list), else None. Whatever
    else `threads` holds is not refused here: the worker fails it visibly (docs/langsmith.md,
    "Thread rules and other delivery shapes")."""
    threads = doc.get("threads")
    return len(threads) if isinstance(threads, list) else None


def _reject_constant(name: str) -> Any:
    raise BadDelivery(f"body is not JSON: {name} is not a JSON number")


def _checked_int(digits: str) -> int:
    value = int(digits)
    if abs(value) >= _INT_LIMIT:
        raise BadDelivery("body has a number too large to store")
    return value


def _has_out_of_range_number(doc: Any) -> bool:
    """Walks every container once: depth at most MAX_DEPTH, and whether any float reaches 2**64
    (orjson reads integers beyond 64 bits as floats, so those need a second look)."""
    suspicious = False
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadDelivery(f"body nests deeper than {MAX_DEPTH} levels")
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif isinstance(child, float) and abs(child) >= _INT_LIMIT:
                suspicious = True
    return suspicious


def _may_be_deep_or_huge(body: bytes) -> bool:
    """False when the text alone rules out both the walk's findings: nesting needs an opening
    bracket per level, and a huge integer 20 digits. Two C-speed scans (~5 us at 1.5 KB)
    instead of walking every container (~25 us for the docs' payload)."""
    return (body.count(b"{") + body.count(b"[") > MAX_DEPTH
            or _TWENTY_DIGITS in body.translate(_DIGITS_AS_ZEROS))


def parse_delivery(body: bytes) -> dict[str, Any]:
    """The parsed delivery, or BadDelivery with a one-line reason."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadDelivery(f"body is not JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise BadDelivery("body must be a JSON object")
    if _may_be_deep_or_huge(body) and _has_out_of_range_number(doc):
        # Rare: only the stdlib parser tells a huge integer from a large float.
        json.loads(body, parse_int=_checked_int, parse_constant=_reject_constant)
    rule_id = doc.get("rule_id")
    if rule_id is not None and not isinstance(rule_id, str):
        raise BadDelivery("rule_id must be a string")
    if "runs" not in doc:
        # A thread rule's delivery, or a shape not known yet: stored and processed (or failed
        # visibly) by the worker. LangSmith never retries a 4xx, so refusing it would lose it.
        return doc
    runs = doc["runs"]
    if not isinstance(runs, list):
        raise BadDelivery("runs must be a list")
    for index, run in enumerate(runs):
        if not isinstance(run, dict):
            raise BadDelivery(f"runs[{index}] must be an object")
        run_id = run.get("id")
        if not isinstance(run_id, str) or not run_id.strip():
            raise BadDelivery(f"runs[{index}].id must be a non-empty string")
        for field in _OBJECT_FIELDS:
            value = run.get(field)
            if value is not None and not isinstance(value, dict):
                raise BadDelivery(f"runs[{index}].{field} must be an object or null")
    return doc
