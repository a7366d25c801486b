"""End to end: deliveries POSTed to the ingress become dataset examples in LangSmith."""

from __future__ import annotations

import json

from tests.support.stack import API_KEY, FIXTURE, Pipeline, StandIn, delivery, fresh_run

DOCS_RUN_ID = "6ab80f10-d79c-4fa2-b441-922ed6feb630"


def test_docs_fixture_becomes_one_example(pipeline: Pipeline, standin: StandIn) -> None:
    body = FIXTURE.read_bytes()
    response = pipeline.post(None, raw=body)
    assert response.status_code == 202, response.text
    assert response.json()["runs"] == 1
    example = pipeline.wait_examples([DOCS_RUN_ID])[DOCS_RUN_ID]
    assert len(example) == 1
    fixture_run = json.loads(body)["runs"][0]
    # inputs were null in the delivery: read back through the API (the stand-in's preloaded run)
    assert example[0]["inputs"] and example[0]["inputs"] == standin.http.get(
        f"/runs/{DOCS_RUN_ID}", headers={"x-api-key": API_KEY}).json()["inputs"]
    assert example[0]["metadata"]["run_id"] == DOCS_RUN_ID
    assert example[0]["metadata"]["trace_id"] == fixture_run["trace_id"]
    assert example[0]["metadata"]["run_name"] == "Search"
    assert example[0]["metadata"]["rule_id"] == json.loads(body)["rule_id"]


def test_inline_inputs_and_outputs_are_used_as_is(pipeline: Pipeline) -> None:
    run = fresh_run(inputs={"question": "2+2?"}, outputs={"answer": "4"})
    assert pipeline.post(delivery([run])).status_code == 202
    example = pipeline.wait_examples([run["id"]])[run["id"]][0]
    assert example["inputs"] == {"question": "2+2?"}
    assert example["outputs"] == {"answer": "4"}
