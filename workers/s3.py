"""Presigned URLs: which may be fetched (pure), and fetching one safely."""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

# The parser lives below both processes: settings validate the same syntax at start.
from lswh_core.allowlist import HostRule as HostRule
from lswh_core.allowlist import parse_rules as parse_rules
from workers.errors import TRANSIENT_STATUSES, RunError
from workers.transport import AddressBlocked

MAX_OBJECT_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_internal(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:
            # Connecting reads `127.1`, `2130706433` or `0x7f.1` as 127.0.0.1 (inet_aton), while
            # ip_address refuses them; a glob must not let one through as if it were a name.
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, UnicodeError):
            return False
    return not address.is_global


def allowed(url: str, rules: tuple[HostRule, ...]) -> bool:
    """http(s) only, no userinfo, host and port matching a rule; https unless the rule says
    http://; loopback and private addresses only when a rule names them exactly."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or "@" in parts.netloc or not parts.hostname:
        return False
    host = parts.hostname.lower().rstrip(".")
    effective_port = port if port is not None else _DEFAULT_PORTS[scheme]
    internal = _is_internal(host)
    for rule in rules:
        if rule.scheme != scheme:
            continue
        if (rule.port if rule.port is not None else _DEFAULT_PORTS[scheme]) != effective_port:
            continue
        if rule.exact:
            if host == rule.host:
                return True
        elif not internal and fnmatch.fnmatchcase(host, rule.host):
            return True
    return False


class ObjectUnusable(Exception):
    """Expired, gone, redirected, or its host resolves to an address we never connect to: use
    the API instead (docs/guarantees.md, What each failure does: a URL that is not
    allowed counts as missing)."""


async def fetch_json(client: httpx.AsyncClient, url: str, what: str) -> tuple[dict[str, Any], int]:
    """GET one presigned object: no redirects, capped in size and time. Errors never carry
    the URL (its query string is a credential)."""
    try:
        async with client.stream("GET", url, follow_redirects=False, timeout=FETCH_TIMEOUT) as response:
            status = response.status_code
            if status in TRANSIENT_STATUSES:
                raise RunError(f"{what}: object store answered {status}", transient=True)
            if status != 200:
                raise ObjectUnusable(f"{what}: object store answered {status}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > MAX_OBJECT_BYTES:
                raise RunError(f"{what}: object is larger than {MAX_OBJECT_BYTES} bytes", transient=False)
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_OBJECT_BYTES:
                    raise RunError(f"{what}: object is larger than {MAX_OBJECT_BYTES} bytes", transient=False)
                chunks.append(chunk)
    except AddressBlocked:
        raise ObjectUnusable(f"{what}: object store host resolves to an internal address") from None
    except httpx.TimeoutException:
        raise RunError(f"{what}: object store timed out", transient=True) from None
    except httpx.TransportError as exc:
        raise RunError(f"{what}: object store unreachable ({type(exc).__name__})", transient=True) from None
    try:
        value = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise RunError(f"{what}: object is not JSON", transient=False) from None
    if not isinstance(value, dict):
        raise RunError(f"{what}: object is not a JSON object", transient=False)
    return value, size  # the bytes read: what a slice counts against its bound
