import logging

import pytest

from lswh_core.redact import RedactingFilter, redact


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ('127.0.0.1 - "POST /webhooks/langsmith?secret=hunter2 HTTP/1.1" 202', "hunter2"),
        ("GET https://b.s3.amazonaws.com/k.json?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA", "deadbeef"),
        ("HTTPStatusError: 403 for url 'https://b.s3.amazonaws.com/k?X-Amz-Signature=cafe'", "cafe"),
        ("Authorization: Bearer hunter2", "hunter2"),
        ("x-api-key: lsv2_pt_secretkey api_key=lsv2_pt_secretkey", "lsv2_pt_secretkey"),
        ("http://user:hunter2@example.com/path", "hunter2"),
    ],
)
def test_secrets_and_signatures_are_removed(text: str, leak: str) -> None:
    assert leak not in redact(text)


def test_paths_stay_for_debugging() -> None:
    assert "/webhooks/langsmith" in redact("POST /webhooks/langsmith?secret=x")


def test_redacting_twice_changes_nothing() -> None:
    once = redact("GET /webhooks/langsmith?secret=x HTTP/1.1")
    assert redact(once) == once


def test_filter_keeps_uvicorn_access_args_shape() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4", "POST", "/webhooks/langsmith?secret=hunter2", "1.1", 202), None)
    RedactingFilter().filter(record)
    assert len(record.args) == 5  # type: ignore[arg-type]
    assert "hunter2" not in record.getMessage()
