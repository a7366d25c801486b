import pytest

from ingress.payload import MAX_DEPTH, BadDelivery, parse_delivery


def bad(body: bytes) -> str:
    with pytest.raises(BadDelivery) as info:
        parse_delivery(body)
    return str(info.value)


def test_minimal_delivery_parses() -> None:
    assert parse_delivery(b'{"runs": [{"id": "r1"}]}')["runs"] == [{"id": "r1"}]


def test_unknown_fields_are_kept() -> None:
    assert parse_delivery(b'{"runs": [{"id": "r", "new": 1}], "extra": true}')["extra"] is True


@pytest.mark.parametrize("body", [b"", b"not json", b"\xff\xfe", b'{"runs": [}', b"NaN", b'{"runs": [], "x": 1e999}'])
def test_non_json_is_refused(body: bytes) -> None:
    assert bad(body)


def test_huge_integer_is_refused() -> None:
    assert "too large" in bad(b'{"runs": [], "x": ' + b"9" * 40 + b"}")


@pytest.mark.parametrize(("number", "refused"), [
    (b"18446744073709551615", False), (b"18446744073709551616", True), (b"-18446744073709551616", True),
    (b"[1, 18446744073709551616]", True)])
def test_integers_are_refused_from_2_to_the_64_on(number: bytes, refused: bool) -> None:
    body = b'{"runs": [], "id": "12345678901234567890123", "x": ' + number + b"}"
    if refused:
        assert "too large" in bad(body)
    else:
        assert parse_delivery(body)["x"] == int(number)


def test_large_float_is_accepted() -> None:
    assert parse_delivery(b'{"runs": [], "x": 1e30}')["x"] == 1e30


def test_nesting_deeper_than_limit_is_refused() -> None:
    deep = b'{"runs": [], "x": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    assert "deeper" in bad(deep)
    assert "depth" in bad(b"[" * 10_000 + b"]" * 10_000)


def test_nesting_at_limit_is_accepted() -> None:
    ok = b'{"runs": [], "x": ' + b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2) + b"}"
    assert parse_delivery(ok)["runs"] == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "JSON object"),
        (b'{"runs": {}}', "runs must be a list"),
        (b'{"runs": [1]}', "runs[0] must be an object"),
        (b'{"runs": [{}]}', "runs[0].id"),
        (b'{"runs": [{"id": ""}]}', "runs[0].id"),
        (b'{"runs": [{"id": 5}]}', "runs[0].id"),
        (b'{"runs": [{"id": "a"}], "rule_id": 3}', "rule_id"),
        (b'{"runs": [{"id": "a", "inputs": []}]}', "runs[0].inputs"),
        (b'{"runs": [{"id": "a", "outputs": "x"}]}', "runs[0].outputs"),
        (b'{"runs": [{"id": "a", "inputs_s3_urls": 1}]}', "runs[0].inputs_s3_urls"),
        (b'{"runs": [{"id": "a", "outputs_s3_urls": true}]}', "runs[0].outputs_s3_urls"),
    ],
)
def test_wrong_shapes_are_refused_with_the_field_named(body: bytes, reason: str) -> None:
    assert reason in bad(body)


def test_null_optional_fields_are_accepted() -> None:
    body = b'{"rule_id": null, "runs": [{"id": "a", "inputs": null, "outputs": null, "inputs_s3_urls": null}]}'
    assert parse_delivery(body)["runs"][0]["id"] == "a"
