"""Who may deliver: `?secret=S` or `Authorization: Bearer S`, against any configured secret.

People paste secrets as they got them: base64 secrets hold `+`, `/` and `=`, and a URL may
carry them raw (`?secret=a+b/c=`) or percent-encoded (`?secret=a%2Bb%2Fc%3D`). Form decoding
would turn the raw `+` into a space and LangSmith, which never retries a 4xx, would get 401
forever. So each place a secret can arrive yields a fixed set of readings (as sent,
percent-decoded, form-decoded) and any of them may match.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from urllib.parse import unquote_to_bytes

from lswh_core.settings import MAX_SECRET_BYTES

Candidates = tuple[bytes | None, ...]


def _readings(value: bytes) -> Candidates:
    """Always three, whatever the value, so the work done does not depend on the input."""
    return value, unquote_to_bytes(value), unquote_to_bytes(value.replace(b"+", b" "))


def query_secret(query_string: bytes) -> Candidates:
    """The readings of the first `secret=` parameter (any bytes allowed), or three Nones."""
    for pair in query_string.split(b"&"):
        name, sep, value = pair.partition(b"=")
        if sep and name == b"secret":
            return _readings(value)
    return None, None, None


def bearer_secret(authorization: bytes | None) -> Candidates:
    """A header carries the secret as pasted; percent-encoded is accepted too, form rules not
    (a header is no query string: its `+` is a plus)."""
    token: bytes | None = None
    if authorization:
        scheme, _, rest = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            token = rest.strip()
    if not token:
        return None, None
    return token, unquote_to_bytes(token)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@functools.lru_cache(maxsize=8)
def _digests(secrets: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The configured secrets' digests: the same few tuples on every request."""
    return tuple(_digest(secret) for secret in secrets)


def is_authorized(candidates: Candidates, secrets: tuple[bytes, ...]) -> bool:
    """Constant-time: every candidate is compared with every configured secret, always, and
    on SHA-256 digests, so neither where a secret differs nor its length shows in the time."""
    matched = False
    digests = _digests(secrets)
    for candidate in candidates:
        if not candidate or len(candidate) > MAX_SECRET_BYTES:
            continue
        theirs = _digest(candidate)
        for ours in digests:
            matched |= hmac.compare_digest(theirs, ours)
    return matched
