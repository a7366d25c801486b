"""The stand-in's Starlette app: every route, and how to start it from settings."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from lswh_standin import admin, datasets, examples, feedback, queues, rules, runs, s3, tenants, threads
from lswh_standin.profiles import Profile, profile
from lswh_standin.routing import admin as admin_route
from lswh_standin.routing import api
from lswh_standin.state import State

PLATFORM = "/v1/platform/datasets/{dataset_id}/examples"


def create_app(
    *,
    latency_ms: int = 0,
    preload_fixture: bool = False,
    limits: bool = True,
    flags: str | Profile = "cloud",
    require_header: str | None = None,
    info_failures: int = 0,
) -> Starlette:
    """The stand-in app. API keys: any starting with `lsv2-standin`, each its own rate-limit bucket;
    `lsv2-standin-org...` keys are organization-scoped (standin/lswh_standin/tenants.py).
    `limits=False` lifts LangSmith Cloud's rate limits; `flags` picks the `/info` profile;
    `info_failures` makes the first N `GET /info` answer 503."""
    state = State(
        startup_latency_ms=latency_ms,
        startup_limits=limits,
        startup_profile=flags if isinstance(flags, Profile) else profile(flags),
        latency_ms=latency_ms,
        info_failures=max(0, info_failures),
    )
    if preload_fixture:
        run = admin.fixture_run()
        state.runs[run["id"]] = run
    routes: list[BaseRoute] = [
        *api("/info", datasets.info, ["GET"], auth=False),
        *api("/sessions", datasets.list_sessions, ["GET"]),
        *api("/datasets", datasets.create_dataset, ["POST"]),
        *api("/datasets", datasets.list_datasets, ["GET"]),
        *api("/datasets/{dataset_id}", datasets.read_dataset, ["GET"]),
        *api("/examples", examples.create_example, ["POST"]),
        *api("/examples", examples.list_examples, ["GET"]),
        *api("/examples/bulk", examples.create_examples_bulk, ["POST"]),
        *api("/examples/bulk", examples.update_examples_bulk, ["PATCH"]),
        *api("/examples/{example_id}", examples.read_example, ["GET"]),
        *api("/examples/{example_id}", examples.update_example, ["PATCH"]),
        *api(PLATFORM, examples.create_examples_multipart, ["POST"]),
        *api(PLATFORM, examples.update_examples_multipart, ["PATCH"]),
        *api(f"{PLATFORM}/metadata", examples.update_metadata, ["PATCH"]),
        *api("/runs/query", runs.query_runs_v1, ["POST"]),
        *api("/runs/{run_id}", runs.read_run, ["GET"]),
        *api("/api/v2/runs/query", runs.query_runs_v2, ["POST"]),
        *api("/api/v2/runs/rules", rules.list_rules, ["GET"]),
        *api("/api/v2/runs/{run_id}", runs.retrieve_run_v2, ["GET"]),
        *api("/annotation-queues", queues.list_queues, ["GET"]),
        *api("/v1/platform/annotation-queues/{queue_id}/items", queues.add_items, ["POST"]),
        *api("/v1/platform/annotation-queues/{queue_id}/items", queues.list_items, ["GET"]),
        *api("/feedback", feedback.list_feedback, ["GET"]),
        *api("/feedback/{feedback_id}", feedback.update_feedback, ["PATCH"]),
        *api("/s3/{bucket}/{key:path}", s3.read_object, ["GET"], auth=False, limited=False, langsmith=False),
        admin_route("/_admin/runs", admin.runs, ["POST"]),
        admin_route("/_admin/runs", admin.read_runs, ["GET"]),
        admin_route("/_admin/feedback", admin.feedback, ["POST"]),
        admin_route("/_admin/feedback", admin.read_feedback, ["GET"]),
        admin_route("/_admin/s3", s3.admin_put, ["POST"]),
        admin_route("/_admin/s3/{key:path}", s3.admin_delete, ["DELETE"]),
        admin_route("/_admin/examples", admin.examples, ["GET"]),
        admin_route("/_admin/datasets", admin.datasets, ["GET"]),
        admin_route("/_admin/stats", admin.stats, ["GET"]),
        admin_route("/_admin/reset", admin.reset, ["POST"]),
        admin_route("/_admin/latency", admin.latency, ["POST"]),
        admin_route("/_admin/faults", admin.add_faults, ["POST"]),
        admin_route("/_admin/faults", admin.list_faults, ["GET"]),
        admin_route("/_admin/limits", admin.set_limits, ["POST"]),
        admin_route("/_admin/limits", admin.read_limits, ["GET"]),
        admin_route("/_admin/info", admin.set_info, ["POST"]),
        admin_route("/_admin/info", admin.read_info, ["GET"]),
        admin_route("/_admin/races", admin.add_race, ["POST"]),
        admin_route("/_admin/races", admin.list_races, ["GET"]),
        admin_route("/_admin/rules", admin.add_rules, ["POST"]),
        admin_route("/_admin/annotation-queues", queues.admin_add_queue, ["POST"]),
        admin_route("/_admin/annotation-queues/{queue_id}/items", queues.admin_read_items, ["GET"]),
        admin_route("/_admin/thread-delivery", threads.admin_thread_delivery, ["POST"]),
    ]
    routes.append(admin_route("/_admin/tenants", tenants.read, ["GET"]))
    app = Starlette(routes=routes)
    app.state.standin = state
    app.state.tenants = tenants.Tenants(required=tenants.parse_required(require_header))
    return app


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def app_from_env() -> Starlette:
    """For `uvicorn lswh_standin.app:app_from_env --factory`: the same switches as the CLI, by env."""
    return create_app(
        latency_ms=int(os.environ.get("STANDIN_LATENCY_MS") or 0),
        preload_fixture=env_flag("STANDIN_PRELOAD_FIXTURE"),
        limits=not env_flag("STANDIN_NO_LIMITS"),
        flags=os.environ.get("STANDIN_FLAGS") or "cloud",
        require_header=os.environ.get("STANDIN_REQUIRE_HEADER") or None,
        info_failures=int(os.environ.get("STANDIN_INFO_FAILURES") or 0),
    )
