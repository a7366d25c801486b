import pytest

from lswh_core.allowlist import parse_rules
from lswh_core.settings import DEFAULT_S3_ALLOWED_HOSTS
from workers.fetch.s3 import allowed

DEFAULTS = parse_rules(DEFAULT_S3_ALLOWED_HOSTS)


@pytest.mark.parametrize(
    "url",
    [
        "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=x",
        "https://my.dotted.bucket.s3.us-west-2.amazonaws.com/k",
        "https://s3.eu-central-1.amazonaws.com/bucket/k",
        "https://storage.googleapis.com/b/k",
        "https://BUCKET.S3.AMAZONAWS.COM/k",
    ],
)
def test_default_hosts_allow_real_object_stores(url: str) -> None:
    assert allowed(url, DEFAULTS)


@pytest.mark.parametrize(
    "url",
    [
        "http://bucket.s3.amazonaws.com/k",  # https only by default
        "https://evil.example.com/k",
        "https://s3.amazonaws.com.evil.com/k",
        "https://bucket.s3.amazonaws.com@evil.com/k",  # userinfo trick
        "https://user:pw@bucket.s3.amazonaws.com/k",
        "ftp://bucket.s3.amazonaws.com/k",
        "file:///etc/passwd",
        "https://bucket.s3.amazonaws.com:8443/k",  # other port
        "https://127.0.0.1/k",
        "not a url",
        "https://[::1]/k",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    assert not allowed(url, DEFAULTS)


def test_loopback_needs_an_exact_entry() -> None:
    assert not allowed("http://127.0.0.1:9000/k", parse_rules(("http://*:9000", "http://127.*:9000")))
    assert allowed("http://127.0.0.1:9000/k", parse_rules(("http://127.0.0.1:9000",)))


def test_private_addresses_never_match_a_glob() -> None:
    assert not allowed("https://10.0.0.5/k", parse_rules(("*",)))
    assert not allowed("https://169.254.169.254/latest", parse_rules(("*",)))
    assert allowed("https://10.0.0.5/k", parse_rules(("10.0.0.5",)))


def test_http_only_when_the_entry_says_so() -> None:
    rules = parse_rules(("http://minio.internal.test:9000",))
    assert allowed("http://minio.internal.test:9000/b/k", rules)
    assert not allowed("https://minio.internal.test:9000/b/k", rules)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "10.1", "169.254.43518"])
def test_numeric_spellings_of_internal_addresses_never_match_a_glob(host: str) -> None:
    """Connecting reads these as 127.0.0.1, 10.0.0.1, 169.254.169.254 (inet_aton)."""
    assert not allowed(f"http://{host}:9000/k", parse_rules(("http://*:9000",)))


def test_a_public_name_still_matches_a_glob() -> None:
    assert allowed("http://minio.example.com:9000/k", parse_rules(("http://*:9000",)))
