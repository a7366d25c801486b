"""Logs: one JSON object per line (or text), delivery_id / rule_id / run_id on the lines they
concern, one ingress line per delivery instead of uvicorn's access log, nothing secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from lswh_core.logs import ContextFilter, JsonFormatter, TextFormatter, TurnBatchedStreamHandler, log_context
from lswh_core.redact import RedactingFilter
from tests.support.procs import RedisServer, wait_until
from tests.support.stack import SECRET, Pipeline, StandIn, delivery, fresh_run

PRESIGNED = "https://bucket.s3.amazonaws.com/obj?X-Amz-Signature=deadbeefcafe"


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- formatters -----------------------------------------------------------------------------------


def test_json_line_carries_context_and_extra_fields() -> None:
    logger, stream = capture(JsonFormatter())
    with log_context(delivery_id="d" * 32, rule_id="rule-1"), log_context(run_id="r1", skip=None):
        logger.info("run %s written", "r1", extra={"dataset": "ds"})
    logger.info("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "run r1 written" and first["level"] == "INFO"
    fields = (first["delivery_id"], first["rule_id"], first["run_id"], first["dataset"])
    assert fields == ("d" * 32, "rule-1", "r1", "ds")
    assert "skip" not in first and first["time"].endswith("Z")
    assert "delivery_id" not in second


def test_secrets_and_presigned_urls_are_redacted_in_message_fields_and_exceptions() -> None:
    logger, stream = capture(JsonFormatter())
    try:
        raise RuntimeError(f"GET {PRESIGNED} failed")
    except RuntimeError:
        logger.exception("fetch %s failed", f"/webhooks/langsmith?secret={SECRET}", extra={"run_id": PRESIGNED})
    text = stream.getvalue()
    assert "deadbeefcafe" not in text and SECRET not in text
    (entry,) = json_lines(text)
    assert "RuntimeError" in entry["exception"] and "<redacted>" in entry["run_id"]


def test_text_format_is_one_readable_line_with_fields() -> None:
    logger, stream = capture(TextFormatter())
    with log_context(delivery_id="abc"):
        logger.warning("slow")
    assert stream.getvalue().rstrip().endswith("WARNING " + logger.name + ": slow delivery_id=abc")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def batched() -> tuple[logging.Logger, CountingStream, TurnBatchedStreamHandler]:
    stream = CountingStream()
    handler = TurnBatchedStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test-logs-batched-{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream, handler


def test_lines_logged_in_one_loop_turn_are_written_together_in_order_when_it_ends() -> None:
    logger, stream, _ = batched()

    async def deliveries() -> str:
        for n in range(5):
            logger.info("delivery %d", n)
        during = stream.getvalue()
        await asyncio.sleep(0)  # the turn ends: its callbacks, the write among them, run
        return during

    assert asyncio.run(deliveries()) == ""
    assert [e["message"] for e in json_lines(stream.getvalue())] == [f"delivery {n}" for n in range(5)]
    assert stream.writes == 1


def test_a_line_logged_with_no_loop_running_is_written_at_once() -> None:
    logger, stream, _ = batched()
    logger.warning("starting")
    assert [e["message"] for e in json_lines(stream.getvalue())] == ["starting"]


def test_flush_writes_the_lines_still_waiting_so_shutdown_loses_none() -> None:
    logger, stream, handler = batched()

    async def last_words() -> None:
        logger.info("one")
        logger.info("two")
        handler.flush()  # what logging.shutdown does at exit

    asyncio.run(last_words())
    assert [e["message"] for e in json_lines(stream.getvalue())] == ["one", "two"]


# --- processes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, standin: StandIn) -> Iterator[Pipeline]:
    pipeline = Pipeline(redis_server, standin, db=15)  # LSWH_LOG_FORMAT unset: json
    pipeline.redis.flushdb()
    yield pipeline
    pipeline.stop()


def test_one_deliverys_json_lines_join_up_by_delivery_id(stack: Pipeline) -> None:
    run = fresh_run(inputs={"q": 1}, outputs={"a": 1})
    answer = stack.post(delivery([run]))
    assert answer.status_code == 202
    delivery_id = answer.json()["delivery_id"]
    stack.wait_examples([run["id"]], timeout=60)
    worker = stack.workers[0]

    def worker_lines() -> list[dict[str, Any]]:
        return [e for e in json_lines(worker.output()) if e.get("delivery_id") == delivery_id]

    wait_until(lambda: any("completed" in e["message"].lower() for e in worker_lines()), timeout=30,
               what="the worker's line for the finished job")
    ingress_lines = [e for e in json_lines(stack.ingress.output()) if e.get("delivery_id") == delivery_id]
    assert len(ingress_lines) == 1
    (line,) = ingress_lines
    assert (line["outcome"], line["runs"], line["logger"]) == ("accepted", 1, "lswh.ingress")
    assert line["bytes"] > 0
    assert line["ms"] >= 0
    assert {e["job_id"] for e in worker_lines()} == {f"delivery-{delivery_id}"}


def test_every_line_is_json_with_no_access_log_and_no_secret(stack: Pipeline) -> None:
    assert stack.post(delivery([fresh_run(inputs={"q": 2})]), secret="wrong-secret").status_code == 401
    wait_until(lambda: any(e.get("outcome") == "unauthorized" for e in json_lines(stack.ingress.output())),
               timeout=10, what="the 401's line")
    for proc in (stack.ingress, *stack.workers):
        text = proc.output()
        lines = [line for line in text.splitlines() if line.strip()]
        not_json = [line for line in lines if not line.startswith("{")]
        assert not not_json, f"{proc.name}: {not_json[:3]}"
        for line in lines:
            json.loads(line)
        assert SECRET not in text and "wrong-secret" not in text
        assert "POST /webhooks" not in text  # uvicorn's access line


def test_a_bad_log_format_stops_start_up_with_exit_2_naming_the_variable() -> None:
    from lswh.cli import main
    from lswh_core.settings import Settings, SettingsError

    assert Settings.from_env({"LSWH_LOG_FORMAT": " Text "}).log_format == "text"
    assert Settings.from_env({}).log_format == "json"
    with pytest.raises(SettingsError, match="LSWH_LOG_FORMAT must be one of json, text"):
        Settings.from_env({"LSWH_LOG_FORMAT": "xml"})
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, {"LSWH_LOG_FORMAT": "xml", "LSWH_SECRETS": SECRET}):
        assert main(["ingress"]) == 2
