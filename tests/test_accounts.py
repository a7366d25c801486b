"""An organization-scoped service key with LANGSMITH_WORKSPACE_ID, on a SmithDB-only server: every
request of every client carries X-Tenant-Id, so every path works; without the workspace id the
worker refuses to start, naming the variable (issue 16)."""

from __future__ import annotations

import datetime as dt
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import run_lswh
from tests.support.faults import wait_for
from tests.support.procs import RedisServer, lswh
from tests.support.stack import Pipeline, StandIn, delivery, fresh_run

WORKSPACE = str(uuid.uuid4())
PUBLIC_URL = "https://hooks.accounts.example.com"
QUEUE = f"review-{uuid.uuid4().hex[:8]}"
QUEUE_RULE = str(uuid.uuid4())
QUEUE_IDS: dict[str, str] = {}


def org_key() -> str:
    """The stand-in's form of an organization-scoped service key (standin/lswh_standin/tenants.py)."""
    return f"lsv2-standin-org-{uuid.uuid4()}"


@pytest.fixture(scope="module")
def smithdb() -> Iterator[StandIn]:
    server = StandIn(flags="v2-only")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def org(redis_server: RedisServer, smithdb: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    rules = Path(tmp_path_factory.mktemp("accounts")) / "rules.toml"
    rules.write_text(textwrap.dedent(f'''
        [rules."{QUEUE_RULE}"]
        [[rules."{QUEUE_RULE}".actions]]
        type = "dataset"
        [[rules."{QUEUE_RULE}".actions]]
        type = "annotation_queue"
        queue = "{QUEUE}"
        '''))
    QUEUE_IDS[QUEUE] = smithdb.add_queue(QUEUE)
    pipeline = Pipeline(redis_server, smithdb, db=52, LANGSMITH_API_KEY=org_key(), LANGSMITH_WORKSPACE_ID=WORKSPACE,
                        LSWH_RULES_FILE=str(rules), LSWH_RECONCILE_EVERY="2s", LSWH_RECONCILE_GRACE="1",
                        LSWH_PUBLIC_URL=PUBLIC_URL, LSWH_LOG_FORMAT="text")
    yield pipeline
    pipeline.stop()


def tenants(standin: StandIn) -> dict[str, Any]:
    return standin.admin("GET", "tenants")  # type: ignore[no-any-return]


def recent() -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)).isoformat()


def test_every_kind_of_run_lands_and_no_request_goes_without_the_workspace(org: Pipeline, smithdb: StandIn) -> None:
    project = str(uuid.uuid4())
    inline = fresh_run(session_id=project, start_time=recent(), inputs={"q": "inline"}, outputs={"a": "inline"})
    s3 = fresh_run(session_id=project, start_time=recent())
    s3["inputs_s3_urls"] = {"ROOT": {"presigned_url": smithdb.put_object({"q": "s3"}), "s3_url": "s3://b/i"}}
    s3["outputs_s3_urls"] = {"ROOT": {"presigned_url": smithdb.put_object({"a": "s3"}), "s3_url": "s3://b/o"}}
    api_only = [fresh_run(session_id=project, start_time=recent()) for _ in range(3)]
    smithdb.add_runs([{**run, "inputs": {"q": f"api {i}"}, "outputs": {"a": f"api {i}"}}
                      for i, run in enumerate(api_only)])
    runs = [inline, s3, *api_only]
    assert org.post(delivery(runs, rule_id=QUEUE_RULE)).status_code == 202

    found = org.wait_examples([r["id"] for r in runs], timeout=60)
    assert found[s3["id"]][0]["inputs"] == {"q": "s3"}
    assert found[api_only[2]["id"]][0]["inputs"] == {"q": "api 2"}  # read through the v2 query
    figures = tenants(smithdb)
    assert figures["without_tenant_total"] == 0, figures
    assert figures["tenant_ids"] == {WORKSPACE: sum(figures["with_tenant"].values())}
    # Each client's routes were met: the requests client's and the generated v2 client's.
    assert {"POST /api/v2/runs/query", "GET /datasets"} <= set(figures["with_tenant"])


def test_the_annotation_queue_action_finds_its_queue_by_name_and_adds_the_run(org: Pipeline,
                                                                              smithdb: StandIn) -> None:
    other = smithdb.add_queue(f"{QUEUE}-other")  # another queue: the action must pick by name
    run = fresh_run(session_id=str(uuid.uuid4()), start_time=recent(), inputs={"q": "queued"},
                    outputs={"a": "queued"})
    assert org.post(delivery([run], rule_id=QUEUE_RULE)).status_code == 202
    org.wait_examples([run["id"]], timeout=60)
    org.wait_idle(timeout=60)
    assert run["id"] in {str(item.get("run_id")) for item in smithdb.queue_items(QUEUE_IDS[QUEUE])}
    assert smithdb.queue_items(other) == []
    routes = tenants(smithdb)["with_tenant"]
    assert routes.get("GET /annotation-queues", 0) >= 1
    assert routes.get("POST /v1/platform/annotation-queues/{queue_id}/items", 0) >= 1
    assert tenants(smithdb)["without_tenant_total"] == 0


def test_backfill_with_the_org_key_writes_what_was_never_delivered(org: Pipeline, smithdb: StandIn) -> None:
    project = str(uuid.uuid4())
    lost = fresh_run(session_id=project, start_time=recent(), name="chat", inputs={"q": "lost"}, outputs={"a": "l"})
    smithdb.add_runs([lost])
    [rule_id] = smithdb.add_rules([{"project_id": project, "filter": 'eq(name, "chat")'}])
    result = run_lswh(org.env, "backfill", "--rule", rule_id, "--since", "1h")
    assert result.returncode == 0, result.stderr
    assert org.wait_examples([lost["id"]], timeout=60)[lost["id"]][0]["inputs"] == {"q": "lost"}
    assert tenants(smithdb)["without_tenant_total"] == 0


def test_reconciliation_with_the_org_key_finds_a_lost_run(org: Pipeline, smithdb: StandIn) -> None:
    project = str(uuid.uuid4())
    hook = {"url": f"{PUBLIC_URL}/webhooks/langsmith?secret=s3cret-for-tests"}
    smithdb.add_rules([{"project_id": project, "filter": 'eq(name, "chat")', "webhooks": [hook]}])
    lost = fresh_run(session_id=project, name="chat", inputs={"q": "reconciled"}, outputs={"a": "r"},
                     start_time=dt.datetime.now(dt.UTC).isoformat())
    smithdb.add_runs([lost])
    found = org.wait_examples([lost["id"]], timeout=60)
    assert found[lost["id"]][0]["inputs"] == {"q": "reconciled"}
    wait_for(lambda: "reconciliation pass succeeded" in org.workers[0].output(), 30, "no reconciliation pass")
    assert tenants(smithdb)["without_tenant_total"] == 0


def test_without_the_workspace_id_the_worker_refuses_to_start_naming_it(redis_server: RedisServer,
                                                                        smithdb: StandIn) -> None:
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/53", "LANGSMITH_ENDPOINT": smithdb.url,
           "LANGSMITH_API_KEY": org_key()}
    proc = lswh("worker", env=env, name="worker-no-workspace")
    code = proc.popen.wait(60)
    output = proc.output()
    proc.stop()
    assert code == 2, output
    assert "LANGSMITH_WORKSPACE_ID" in output and "403" in output and "Traceback" not in output
    assert env["LANGSMITH_API_KEY"] not in output
