"""workers/hydrate.py's pure parts called directly: an inline value is used when present, a
presigned URL only when well formed, and a field only the API has fails when the API has nothing."""

from workers.errors import RunError
from workers.hydrate import Hydrated, inline, presigned_url, settle_from_api

URL = "https://s3.example/obj?X-Amz-Signature=abc"


def test_inline_value_only_when_it_is_an_object() -> None:
    assert inline({"outputs": {"a": 1}}, "outputs") == {"a": 1}
    assert inline({"outputs": None}, "outputs") is None
    assert inline({"outputs": "text"}, "outputs") is None


def test_presigned_url_is_read_from_root_only_when_well_formed() -> None:
    assert presigned_url({"outputs_s3_urls": {"ROOT": {"presigned_url": URL}}}, "outputs_s3_urls") == URL
    assert presigned_url({"outputs_s3_urls": {"ROOT": {"presigned_url": ""}}}, "outputs_s3_urls") is None
    assert presigned_url({"outputs_s3_urls": {"other": {"presigned_url": URL}}}, "outputs_s3_urls") is None
    assert presigned_url({}, "outputs_s3_urls") is None


def test_a_field_only_the_api_has_fails_for_good_when_the_api_returns_nothing() -> None:
    item = Hydrated(run={"id": "r1"}, from_api={"outputs"})
    settle_from_api(item, None)
    assert item.error is not None and not item.error.transient
    assert "outputs" in item.error.reason


def test_the_apis_refusal_becomes_the_runs_error() -> None:
    refusal = RunError("reading the run: 503", transient=True)
    item = Hydrated(run={"id": "r1"}, from_api={"inputs"})
    settle_from_api(item, refusal)
    assert item.error is refusal


def test_nothing_to_settle_when_no_field_needs_the_api() -> None:
    item = Hydrated(run={"id": "r1"}, values={"outputs": {"a": 1}})
    settle_from_api(item, None)
    assert item.error is None and item.values == {"outputs": {"a": 1}}
