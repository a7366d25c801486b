"""The ingress over HTTP (uvicorn), as LangSmith and curl reach it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from lswh_core.contract import delivery_id_of
from tests.support.procs import RedisServer
from tests.support.stack import ROTATED, SECRET, Pipeline, delivery, fresh_run


def stored_deliveries(pipeline: Pipeline) -> int:
    return sum(1 for _ in pipeline.redis.scan_iter("lswh:delivery:*"))


def test_delivery_is_accepted_with_its_id_and_run_count(pipeline: Pipeline) -> None:
    body = json.dumps(delivery([fresh_run(), fresh_run()])).encode()
    response = pipeline.post(None, raw=body)
    assert response.status_code == 202
    assert response.json() == {"delivery_id": delivery_id_of(body), "runs": 2, "duplicate": False}
    assert pipeline.redis.get(f"lswh:delivery:{delivery_id_of(body)}") == body


def test_same_body_again_is_a_duplicate_with_the_same_id(pipeline: Pipeline) -> None:
    body = json.dumps(delivery([fresh_run()])).encode()
    first = pipeline.post(None, raw=body).json()
    job_key = f"rq:job:delivery-{first['delivery_id']}"
    created = pipeline.redis.hget(job_key, "created_at")
    again = pipeline.post(None, raw=body).json()
    assert again == {**first, "duplicate": True}
    assert created is not None
    assert pipeline.redis.hget(job_key, "created_at") == created  # the job was not written again


def test_bearer_header_authenticates(pipeline: Pipeline) -> None:
    response = pipeline.post(delivery([fresh_run()]), secret=None, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 202


def test_second_secret_is_accepted_for_rotation(pipeline: Pipeline) -> None:
    assert pipeline.post(delivery([fresh_run()]), secret=ROTATED).status_code == 202


def test_either_credential_is_enough(pipeline: Pipeline) -> None:
    response = pipeline.post(delivery([fresh_run()]), secret="wrong", headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 202


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x", SECRET[:-1], "ü" * 10, "x" * 100_00])
def test_missing_empty_or_wrong_secret_is_401_and_stores_nothing(pipeline: Pipeline, secret: str | None) -> None:
    before = stored_deliveries(pipeline)
    response = pipeline.post(delivery([fresh_run()]), secret=secret)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or wrong secret"}
    assert stored_deliveries(pipeline) == before


def test_unauthenticated_oversized_body_is_401_not_413(pipeline: Pipeline) -> None:
    response = pipeline.post(None, raw=b"x" * 30_000_000, secret="wrong")
    assert response.status_code == 401


def test_body_over_limit_by_content_length_is_413(pipeline: Pipeline) -> None:
    response = pipeline.post(None, raw=b" " * (26_214_400 + 1))
    assert response.status_code == 413
    assert "LSWH_MAX_BODY_BYTES" in response.json()["error"]


def test_chunked_body_over_limit_is_413(pipeline: Pipeline) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 1_048_576

    response = httpx.post(f"{pipeline.url}/webhooks/langsmith", params={"secret": SECRET}, content=chunks(),
                          timeout=30)
    assert response.status_code == 413


def test_chunked_body_under_limit_is_accepted(pipeline: Pipeline) -> None:
    body = json.dumps(delivery([fresh_run()])).encode()
    response = httpx.post(f"{pipeline.url}/webhooks/langsmith", params={"secret": SECRET},
                          content=iter([body[:10], body[10:]]), timeout=30)
    assert response.status_code == 202


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"\xff\xfe{}", b"[]", b'{"runs": 1}', b'{"runs": [{"id": ""}]}', b'{"runs": null}',
     b'{"runs": [], "n": ' + b"9" * 50 + b"}", b"[" * 10_000 + b"]" * 10_000],
)
def test_bad_bodies_are_400_with_one_line_error(pipeline: Pipeline, raw: bytes) -> None:
    before = stored_deliveries(pipeline)
    response = pipeline.post(None, raw=raw)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error and "\n" not in error
    assert stored_deliveries(pipeline) == before


def test_content_type_is_ignored(pipeline: Pipeline) -> None:
    response = pipeline.post(None, raw=json.dumps(delivery([fresh_run()])).encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 202


def test_health_and_readiness(pipeline: Pipeline) -> None:
    assert pipeline.http.get("/healthz").status_code == 200
    assert pipeline.http.get("/readyz").status_code == 200


def test_unknown_path_is_json_404(pipeline: Pipeline) -> None:
    response = pipeline.http.get("/nope")
    assert response.status_code == 404
    assert "error" in response.json()


def test_answers_are_json_with_a_length_not_chunked(pipeline: Pipeline) -> None:
    for response in (pipeline.post(delivery([fresh_run()])), pipeline.post(delivery([fresh_run()]), secret="no")):
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        assert "transfer-encoding" not in response.headers


def test_other_methods_on_the_webhook_path_are_json_405(pipeline: Pipeline) -> None:
    response = pipeline.http.get("/webhooks/langsmith", params={"secret": SECRET})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "error" in response.json()


def test_the_route_behind_the_shortcut_answers_the_same(redis_server: RedisServer) -> None:
    """A POST that misses Ingress's shortcut reaches the same Webhook through Starlette's router."""
    import asyncio

    from ingress.app import create_app
    from lswh_core.settings import Settings

    app = create_app(Settings(redis_url=redis_server.url, secrets=(SECRET,)))
    body = json.dumps(delivery([fresh_run()])).encode()

    async def post(asgi: object) -> tuple[int, bytes]:
        transport = httpx.ASGITransport(app=asgi)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            response = await client.post("/webhooks/langsmith", params={"secret": SECRET}, content=body)
            return response.status_code, response.content

    async def both() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        async with app.router.lifespan_context(app):  # type: ignore[arg-type]
            return await post(app), await post(app.starlette)

    shortcut, routed = asyncio.run(both())
    assert shortcut[0] == 202
    assert routed == (202, shortcut[1].replace(b'"duplicate":false', b'"duplicate":true'))


def test_an_unexpected_error_is_a_json_500_with_its_class_logged(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from starlette.datastructures import State

    from ingress.app import Webhook

    class Broken:
        async def check(self, body: bytes) -> tuple[str, int]:
            raise RuntimeError("a bug")

    state = State({"secrets": (SECRET.encode(),), "checker": Broken(), "metrics": _Metrics(),
                   "settings": _settings()})
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/webhooks/langsmith", "headers": [],
             "query_string": f"secret={SECRET}".encode()}
    asyncio.run(Webhook(state)(scope, receive, send))
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"]) == {"error": "internal error"}
    # the traceback: as exc_info, or as exc_text once the redacting filter has formatted it
    assert any("unhandled RuntimeError" in r.getMessage() and (r.exc_info or r.exc_text) for r in caplog.records)


class _Metrics:
    def delivery(self, *args: object) -> None:
        pass


def _settings():  # type: ignore[no-untyped-def]
    from lswh_core.settings import Settings

    return Settings(redis_url="redis://127.0.0.1:1/0", secrets=(SECRET,))


def test_empty_runs_list_is_accepted(pipeline: Pipeline) -> None:
    response = pipeline.post(delivery([]))
    assert response.status_code == 202
    assert response.json()["runs"] == 0


def test_start_up_objects_are_frozen_out_of_garbage_collection(redis_server: RedisServer) -> None:
    """A full collection would otherwise walk every module and class on each pass, a stall
    every delivery in flight waits out."""
    import asyncio
    import gc

    from ingress.app import create_app
    from lswh_core.settings import Settings

    app = create_app(Settings(redis_url=redis_server.url, secrets=(SECRET,)))

    async def started() -> int:
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    gc.unfreeze()
    try:
        assert asyncio.run(started()) > 10_000
    finally:
        gc.unfreeze()
