"""Deliveries shaped like the docs' fixture, each with a fresh run id so none is a duplicate."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "standin" / "lswh_standin" / "fixtures" / "langsmith_docs_payload.json"
FIXTURE_RUN_ID = "6ab80f10-d79c-4fa2-b441-922ed6feb630"
# The wrk Lua script splits the template on this marker and puts a fresh uuid in each gap.
MARKER = "@@RUN_ID@@"


def fixture_text() -> str:
    return FIXTURE.read_text()


def template() -> str:
    """The fixture verbatim with its run id (also the root run's trace id) marked."""
    text = fixture_text()
    assert FIXTURE_RUN_ID in text
    return text.replace(FIXTURE_RUN_ID, MARKER)


def fresh_body(tmpl: str | None = None) -> bytes:
    """One delivery: the fixture with a fresh uuid4 as run id and trace id (a root run)."""
    return (tmpl or template()).replace(MARKER, str(uuid.uuid4())).encode()


def big_body(target_bytes: int = 10 * 1024 * 1024) -> bytes:
    """A delivery of about `target_bytes`: the fixture's run repeated with fresh ids and
    about 3 KiB of inline inputs and outputs each, the shape a large rule match has."""
    fixture = json.loads(fixture_text())
    proto = fixture["runs"][0]
    text_kib = "lorem ipsum dolor sit amet " * 40
    runs: list[dict] = []
    size = 200
    while size < target_bytes:
        run_id = str(uuid.uuid4())
        run = {**proto, "id": run_id, "trace_id": run_id,
               "dotted_order": proto["dotted_order"].replace(FIXTURE_RUN_ID, run_id),
               "app_path": proto["app_path"].replace(FIXTURE_RUN_ID, run_id),
               "inputs": {"question": text_kib, "context": text_kib},
               "outputs": {"answer": text_kib}}
        encoded = json.dumps(run)
        size += len(encoded) + 1
        runs.append(run)
    body = {**fixture, "runs": runs}
    return json.dumps(body).encode()
