"""Who may deliver: the pure readings of a secret, then the real ingress over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from ingress.auth import MAX_SECRET_BYTES, bearer_secret, is_authorized, query_secret
from tests.support.procs import Proc, RedisServer, free_port, lswh, wait_http

SECRETS = (b"alpha", b"beta")
# What secrets.token_bytes -> base64 gives people: every character form decoding changes.
PASTED = "q+Xk/9w==Zr+/"


def test_query_secret_is_percent_decoded_to_bytes() -> None:
    assert b"a b\xff" in query_secret(b"x=1&secret=a%20b%FF")


def test_query_secret_missing_is_none() -> None:
    assert query_secret(b"x=1&secrets=abc") == (None, None, None)


def test_query_secret_keeps_a_raw_plus_as_a_plus() -> None:
    readings = query_secret(b"secret=a+b/c=")
    assert b"a+b/c=" in readings
    assert b"a b/c=" in readings  # and the form reading, for a secret that holds a space


def test_query_secret_percent_encoded_plus_slash_and_equals_decode_to_themselves() -> None:
    assert b"a+b/c=" in query_secret(b"secret=a%2Bb%2Fc%3D")


def test_every_source_yields_the_same_number_of_candidates_whatever_it_holds() -> None:
    assert len({len(query_secret(q)) for q in (b"", b"secret=", b"secret=x%2B", b"a=b")}) == 1
    assert len({len(bearer_secret(h)) for h in (None, b"", b"Bearer x", b"Basic y")}) == 1


def test_bearer_secret_ignores_other_schemes() -> None:
    assert b"alpha" in bearer_secret(b"Bearer alpha")
    assert b"alpha" in bearer_secret(b"bearer   alpha ")
    assert bearer_secret(b"Basic YWxwaGE=") == (None, None)
    assert bearer_secret(None) == (None, None)


def test_bearer_secret_is_taken_raw_or_percent_decoded_never_form_decoded() -> None:
    assert set(bearer_secret(b"Bearer a+b%2Fc=")) == {b"a+b%2Fc=", b"a+b/c="}


def test_any_configured_secret_is_accepted_for_rotation() -> None:
    assert is_authorized((b"beta", None), SECRETS)
    assert is_authorized((None, b"alpha"), SECRETS)


def test_wrong_empty_and_overlong_secrets_are_refused() -> None:
    assert not is_authorized((b"alph", None), SECRETS)
    assert not is_authorized((b"", b""), SECRETS)
    assert not is_authorized((b"alpha" * MAX_SECRET_BYTES,), (b"alpha" * MAX_SECRET_BYTES,))


def test_a_secret_and_its_prefix_or_extension_are_told_apart() -> None:
    assert not is_authorized((b"alphaX",), SECRETS)
    assert not is_authorized((b"alph",), SECRETS)


def test_no_secrets_configured_refuses_everything() -> None:
    assert not is_authorized((b"anything",), ())


# --- the real ingress --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ingress(redis_server: RedisServer) -> Iterator[str]:
    port = free_port()
    # A database of its own: what this ingress stores waits there, no worker runs it.
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/45", "LSWH_SECRETS": f"other,{PASTED}"}
    proc: Proc = lswh("ingress", "--port", str(port), env=env, name="ingress-auth")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        yield url
    finally:
        proc.stop()


def post(url: str, *, query: str = "", headers: dict[str, str] | None = None) -> int:
    """The query string goes on the wire exactly as given (no client re-encoding)."""
    body = json.dumps({"runs": [{"id": f"r-{query}-{headers}"}]}).encode()
    request = httpx.Request("POST", f"{url}/webhooks/langsmith", content=body, headers=headers)
    request.url = request.url.copy_with(query=query.encode())
    with httpx.Client(timeout=10) as client:
        response = client.send(request)
    return response.status_code


@pytest.mark.parametrize("query", [f"secret={PASTED}", f"secret={quote(PASTED, safe='')}",
                                   f"secret={quote(PASTED, safe='/=')}"],
                         ids=["raw", "percent-encoded", "plus-encoded-only"])
def test_pasted_base64_secret_in_the_url_is_accepted_raw_or_encoded(ingress: str, query: str) -> None:
    assert post(ingress, query=query) == 202


@pytest.mark.parametrize("token", [PASTED, quote(PASTED, safe="")], ids=["raw", "percent-encoded"])
def test_pasted_base64_secret_in_the_bearer_header_is_accepted(ingress: str, token: str) -> None:
    assert post(ingress, headers={"Authorization": f"Bearer {token}"}) == 202


@pytest.mark.parametrize("query", [f"secret={PASTED.replace('+', ' ')}", f"secret={PASTED[:-1]}",
                                   f"secret={PASTED}x", f"secret={quote(PASTED, safe='')}%00"])
def test_near_misses_of_a_pasted_secret_are_refused(ingress: str, query: str) -> None:
    assert post(ingress, query=query.replace(" ", "%20")) == 401
