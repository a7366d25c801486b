"""Dataset examples: create (JSON and multipart), update, per-key metadata changes, list, read.

Shapes, from the SDK (langsmith 0.15.1) and LangSmith's API reference:
- Multipart create (`Client.create_examples` with `dataset_examples_multipart_enabled`) answers 201
  `{"count", "example_ids", "as_of"}`; a request holding an id that exists is refused whole with 409.
- An update replaces `metadata` whole when it names it (issue 8's finding against LangSmith; the SDK
  offers `datasets.examples.update_metadata` as the way to change some keys and keep the others);
  `split` sets `metadata.dataset_split`.
- `split` lives in `metadata.dataset_split`, a list; an example created without one is in the base
  split, `["base"]` (the SDK's own tests use `metadata={"dataset_split": ["base"]}` for examples read
  back from the API, and `datasets.examples.update_metadata` says array operations on dataset_split
  start "as the base split").
- `PATCH .../examples/metadata` (`client.datasets.examples.update_metadata`,
  resources/datasets/examples.py): ordered SET / ARRAY_ADD / ARRAY_REMOVE operations on named keys;
  keys not named keep their values; 207 with one status per submitted id, UPDATED or NOT_FOUND.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lswh_standin.datasets import page
from lswh_standin.state import (
    ApiError,
    BadRequest,
    Race,
    State,
    Unprocessable,
    detail,
    iso,
    json_body,
    uuid_or_none,
    uuid_params,
)

BASE_SPLIT = "base"


def _splits(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def new_example(dataset_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    now = iso()
    metadata = dict(spec.get("metadata") or {})
    if spec.get("split") is not None:
        metadata["dataset_split"] = _splits(spec["split"])
    metadata.setdefault("dataset_split", [BASE_SPLIT])
    return {
        "id": uuid_or_none(spec.get("id")) or str(uuid.uuid4()),
        "dataset_id": dataset_id,
        "name": None,
        "inputs": spec.get("inputs"),
        "outputs": spec.get("outputs"),
        "metadata": metadata,
        "source_run_id": uuid_or_none(spec.get("source_run_id")),
        "created_at": spec.get("created_at") or now,
        "modified_at": now,
        "attachment_urls": None,
    }


def insert_all(state: State, new: list[dict[str, Any]]) -> Response | None:
    """Store every example or, when one id is taken, none of them (409), as LangSmith does."""
    ids = [e["id"] for e in new]
    taken = sorted({i for i in ids if i in state.examples} | {i for i in ids if ids.count(i) > 1})
    if taken:
        return detail(409, f"Example(s) already exist: {', '.join(taken)}")
    for example in new:
        state.examples[example["id"]] = example
    return None


def dataset_or_404(state: State, dataset_id: Any) -> str:
    found = uuid_or_none(dataset_id)
    if found is None or found not in state.datasets:
        raise ApiError(404, "Dataset not found")
    return found


async def create_example(request: Request, state: State) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    example = new_example(dataset_or_404(state, body.get("dataset_id")), body)
    return insert_all(state, [example]) or JSONResponse(example)


async def create_examples_bulk(request: Request, state: State) -> Response:
    body = await json_body(request)
    if not isinstance(body, list) or not all(isinstance(e, dict) for e in body):
        raise BadRequest("body must be a list of examples")
    new = [new_example(dataset_or_404(state, spec.get("dataset_id")), spec) for spec in body]
    return insert_all(state, new) or JSONResponse(new)


def _multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each part of a multipart/form-data body, as requests-toolbelt writes it."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise BadRequest("expected multipart/form-data")
    parts = []
    for chunk in body.split(b"--" + match.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name is None:
            raise BadRequest("multipart part without a name")
        parts.append((name.group(1).decode(), data.removesuffix(b"\r\n")))
    return parts


def _examples_from_parts(parts: Iterable[tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
    """Group `<id>`, `<id>.inputs`, `<id>.outputs` parts into one spec per example id."""
    specs: dict[str, dict[str, Any]] = {}
    for name, data in parts:
        example_id, _, part = name.partition(".")
        spec = specs.setdefault(example_id, {"id": example_id})
        if part.startswith("attachment"):
            continue  # attachments are not part of what the pipeline writes
        try:
            value = json.loads(data)
        except ValueError:
            raise BadRequest(f"part {name} is not JSON") from None
        if part == "":
            spec.update(value)
        elif part in ("inputs", "outputs"):
            spec[part] = value
    for example_id in specs:
        if uuid_or_none(example_id) is None:
            raise BadRequest(f"bad example id {example_id!r}")
    return specs


async def _parts(request: Request) -> dict[str, dict[str, Any]]:
    return _examples_from_parts(_multipart(await request.body(), request.headers.get("content-type", "")))


async def create_examples_multipart(request: Request, state: State) -> Response:
    dataset_id = dataset_or_404(state, request.path_params["dataset_id"])
    new = [new_example(dataset_id, spec) for spec in (await _parts(request)).values()]
    refused = insert_all(state, new)
    if refused is not None:
        return refused
    return JSONResponse({"count": len(new), "example_ids": [e["id"] for e in new], "as_of": iso()}, status_code=201)


def update_all(state: State, updates: list[dict[str, Any]], dataset_id: str | None = None) -> Response:
    """Apply every update or none: 409 when an example lives in another dataset than the one the
    request names, 404 when one is unknown."""
    ids = [uuid_or_none(u.get("id")) for u in updates]
    elsewhere = [
        str(i)
        for u, i in zip(updates, ids, strict=True)
        if i in state.examples
        and (named := dataset_id or uuid_or_none(u.get("dataset_id"))) is not None
        and state.examples[i]["dataset_id"] != named
    ]
    if elsewhere:
        return detail(409, f"Example(s) belong to another dataset: {', '.join(elsewhere)}")
    missing = [str(u.get("id")) for u, i in zip(updates, ids, strict=True) if i is None or i not in state.examples]
    if missing:
        return detail(404, f"Example(s) not found: {', '.join(missing)}")
    for update, example_id in zip(updates, ids, strict=True):
        example = state.examples[str(example_id)]
        for key in ("inputs", "outputs"):
            if key in update:
                example[key] = update[key]
        if update.get("metadata") is not None:
            example["metadata"] = dict(update["metadata"])
        if update.get("split") is not None:
            example["metadata"] = {**(example["metadata"] or {}), "dataset_split": _splits(update["split"])}
        example["modified_at"] = iso()
    done = [str(i) for i in ids]
    return JSONResponse(
        {"message": f"{len(done)} examples updated", "count": len(done), "example_ids": done, "as_of": iso()}
    )


async def update_examples_bulk(request: Request, state: State) -> Response:
    body = await json_body(request)
    if not isinstance(body, list) or not all(isinstance(u, dict) for u in body):
        raise BadRequest("body must be a list of example updates")
    return update_all(state, body)


async def update_examples_multipart(request: Request, state: State) -> Response:
    dataset_id = dataset_or_404(state, request.path_params["dataset_id"])
    return update_all(state, list((await _parts(request)).values()), dataset_id)


async def update_example(request: Request, state: State) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    response = update_all(state, [{**body, "id": request.path_params["example_id"]}])
    if response.status_code != 200:
        return response
    return JSONResponse({"message": "Example updated successfully"})


# --- per-key metadata ---------------------------------------------------------------------------


def _operations(body: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Validate like the API reference: at most 10,000 ids, 50 operations, 10 of them array ones."""
    if not isinstance(body, dict):
        raise Unprocessable("body must be an object")
    ids, operations = body.get("example_ids"), body.get("operations")
    if not isinstance(ids, list) or not ids or len(ids) > 10_000 or not all(isinstance(i, str) for i in ids):
        raise Unprocessable("example_ids must be a list of 1 to 10000 ids")
    if not isinstance(operations, list) or not operations or len(operations) > 50:
        raise Unprocessable("operations must be a list of 1 to 50 operations")
    parsed = []
    for op in operations:
        kind = str(op.get("operation", "")).upper() if isinstance(op, dict) else ""
        key = op.get("key") if isinstance(op, dict) else None
        if kind not in ("SET", "ARRAY_ADD", "ARRAY_REMOVE"):
            raise Unprocessable("operation must be SET, ARRAY_ADD or ARRAY_REMOVE")
        if not isinstance(key, str) or not key or len(key.encode()) > 255:
            raise Unprocessable("key must be a non-empty string of at most 255 bytes")
        values = op.get("values") or []
        if kind != "SET" and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
            raise Unprocessable("values must be a list of strings")
        parsed.append({"key": key, "operation": kind, "value": op.get("value"), "values": values})
    if sum(op["operation"] != "SET" for op in parsed) > 10:
        raise Unprocessable("at most 10 array operations")
    return ids, parsed


def _apply(metadata: dict[str, Any], op: dict[str, Any]) -> None:
    key = op["key"]
    if op["operation"] == "SET":
        metadata[key] = op["value"]
        return
    current = metadata.get(key)
    start: list[Any] = [BASE_SPLIT] if key == "dataset_split" else []
    items = list(current) if isinstance(current, list) else start
    if op["operation"] == "ARRAY_ADD":
        items += [v for v in op["values"] if v not in items]
    else:
        items = [v for v in items if v not in op["values"]]
    metadata[key] = items


async def update_metadata(request: Request, state: State) -> Response:
    dataset_id = dataset_or_404(state, request.path_params["dataset_id"])
    ids, operations = _operations(await json_body(request))
    statuses = []
    for submitted in ids:
        example = state.examples.get(uuid_or_none(submitted) or "")
        if example is None or example["dataset_id"] != dataset_id:
            statuses.append({"id": submitted, "status": "NOT_FOUND", "description": "example not in dataset"})
            continue
        metadata = dict(example["metadata"] or {})
        for op in operations:
            _apply(metadata, op)
        example.update(metadata=metadata, modified_at=iso())
        statuses.append({"id": submitted, "status": "UPDATED"})
    return JSONResponse({"statuses": statuses}, status_code=207)


# --- reads ----------------------------------------------------------------------------------------


async def read_example(request: Request, state: State) -> Response:
    example = state.examples.get(uuid_or_none(request.path_params["example_id"]) or "")
    if example is None:
        return detail(404, "Example not found")
    return JSONResponse(example)


async def list_examples(request: Request, state: State) -> Response:
    params = request.query_params
    ids = uuid_params(request, "id")
    datasets = set(uuid_params(request, "dataset"))
    splits = set(params.getlist("splits"))
    found = [
        e
        for e in state.examples.values()
        if (not ids or e["id"] in ids)
        and (not datasets or e["dataset_id"] in datasets)
        and (not splits or splits & set((e["metadata"] or {}).get("dataset_split") or []))
    ]
    answer = JSONResponse(page(found, request))
    # The answer is rendered before the race writes, so it does not show what the race creates.
    if state.races:
        _run_race(state, state.races[0], ids, next((d for d in datasets if d), None))
    return answer


def _run_race(state: State, race: Race, listed: list[str], dataset_id: str | None) -> None:
    if race.examples:
        specs = [s for s in race.examples if uuid_or_none(s.get("id")) not in state.examples]
    else:
        missing = [i for i in listed if i not in state.examples]
        specs = [
            {"id": i, "inputs": {"raced": True}, "outputs": None, "metadata": {"written_by": "another writer"}}
            for i in missing[: race.per_list]
        ]
    targets = [(spec, uuid_or_none(spec.get("dataset_id")) or dataset_id) for spec in specs]
    if not targets or any(d not in state.datasets for _, d in targets):
        return  # nothing this listing could race with; wait for the next one
    for spec, target in targets:
        example = new_example(str(target), spec)
        state.examples[example["id"]] = example
    race.fired += 1
    race.times -= 1
    if race.times <= 0:
        state.races.remove(race)
