"""Who may deliver: `?secret=S` or `Authorization: Bearer S`, against any configured secret."""

from __future__ import annotations

import hmac
from urllib.parse import unquote_to_bytes

# Nobody configures a longer secret; refusing early keeps hostile inputs cheap.
MAX_SECRET_BYTES = 1024


def query_secret(query_string: bytes) -> bytes | None:
    """The raw bytes of the first `secret=` parameter (percent-decoded, any bytes allowed)."""
    for pair in query_string.split(b"&"):
        name, sep, value = pair.partition(b"=")
        if sep and name == b"secret":
            return unquote_to_bytes(value.replace(b"+", b" "))
    return None


def bearer_secret(authorization: bytes | None) -> bytes | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip()


def is_authorized(candidates: list[bytes | None], secrets: tuple[bytes, ...]) -> bool:
    """Constant-time on bytes: every candidate is compared with every secret, always."""
    matched = False
    for candidate in candidates:
        if not candidate or len(candidate) > MAX_SECRET_BYTES:
            continue
        for secret in secrets:
            matched |= hmac.compare_digest(candidate, secret)
    return matched
