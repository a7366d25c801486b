from ingress.auth import MAX_SECRET_BYTES, bearer_secret, is_authorized, query_secret

SECRETS = (b"alpha", b"beta")


def test_query_secret_is_percent_decoded_to_bytes() -> None:
    assert query_secret(b"x=1&secret=a%20b%FF") == b"a b\xff"


def test_query_secret_missing_is_none() -> None:
    assert query_secret(b"x=1&secrets=abc") is None


def test_bearer_secret_ignores_other_schemes() -> None:
    assert bearer_secret(b"Bearer alpha") == b"alpha"
    assert bearer_secret(b"bearer   alpha ") == b"alpha"
    assert bearer_secret(b"Basic YWxwaGE=") is None
    assert bearer_secret(None) is None


def test_any_configured_secret_is_accepted_for_rotation() -> None:
    assert is_authorized([b"beta", None], SECRETS)
    assert is_authorized([None, b"alpha"], SECRETS)


def test_wrong_empty_and_overlong_secrets_are_refused() -> None:
    assert not is_authorized([b"alph", None], SECRETS)
    assert not is_authorized([b"", b""], SECRETS)
    assert not is_authorized([b"alpha" * MAX_SECRET_BYTES], (b"alpha" * MAX_SECRET_BYTES,))


def test_no_secrets_configured_refuses_everything() -> None:
    assert not is_authorized([b"anything"], ())
