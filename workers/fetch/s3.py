"""Presigned URLs: which may be fetched (pure, `allowed`), and fetching one safely (`ObjectStore`).

The fetches use aiohttp directly: one stack besides the SDK's two (`requests`, httpx2). bench/workers.py
measures it against httpx's own pool (the floor's two transports); httpcore's pool checks every
pooled connection (a syscall each) on every request and release, so its CPU grows with
concurrency, and httpx's client layers on top of aiohttp cost about as much as aiohttp itself.

Safety, each property on the connection actually made:
- The resolver refuses loopback and private addresses for any host not listed exactly in
  LSWH_S3_ALLOWED_HOSTS, so an allowed-looking name that resolves inward (DNS rebinding) is never
  connected to. aiohttp skips the resolver for hosts that look numeric (`127.1` connects to
  127.0.0.1), so those are checked before the request.
- No redirects, no decompression (the size cap counts bytes as sent), a size cap, connect and
  read timeouts, the URL sent verbatim (`encoded=True`: re-quoting a presigned URL's path would
  break its signature), no proxy unless LSWH_S3_PROXY=env (lswh_core/egress.py then picks the
  proxy per URL and the CA bundle; the proxy's own host is trusted like an exact allow-list
  entry, and the object's host is resolved by the proxy, not here).

What a failure means is decided here, in `fetch_json`, and nowhere else: `ObjectUnusable` (the
caller reads the run through the API instead) or a `RunError`, transient (timeouts, resets,
refused connections, 5xx) or not (too large, not a JSON object). Errors never carry the URL: its
query string is a credential.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import ssl as ssl_
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from yarl import URL

from lswh_core.allowlist import HostRule
from workers.errors import TRANSIENT_STATUSES, RunError

MAX_OBJECT_BYTES = 64 * 1024 * 1024
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
CHUNK_BYTES = 64 * 1024
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


class InternalAddress(OSError):
    """Raised by the resolver: the host resolves only to addresses we do not connect to."""


class PublicOnlyResolver(AbstractResolver):
    def __init__(self, exact_hosts: Collection[str], inner: AbstractResolver | None = None) -> None:
        self._exact = {host.lower() for host in exact_hosts}
        self._inner = inner

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._inner is None:  # made on first use: it binds to the running loop
            self._inner = aiohttp.ThreadedResolver()
        found = await self._inner.resolve(host, port, family)
        if self.is_exact(host):
            return found
        public = [r for r in found if ipaddress.ip_address(r["host"]).is_global]
        if not public:
            raise InternalAddress(f"{host} resolves only to internal addresses")
        return public

    def is_exact(self, host: str) -> bool:
        return host.lower().rstrip(".").strip("[]") in self._exact

    def check_literal(self, host: str) -> None:
        """The check aiohttp skips: a numeric host is connected to without resolving, and
        getaddrinfo reads `127.1` or `2130706433` as 127.0.0.1. No DNS is asked here."""
        if not is_ip_address(host) or self.is_exact(host):
            return
        try:
            infos = socket.getaddrinfo(host.strip("[]"), None, flags=socket.AI_NUMERICHOST)
        except (OSError, UnicodeError):
            return  # not an address after all: aiohttp's own connect attempt will fail
        if not any(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_global for info in infos):
            raise InternalAddress(f"{host} is an internal address")

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class ObjectStore:
    """GETs of presigned objects on one aiohttp pool of `max_connections`. The session is made on
    first use, on the loop that uses it (aiohttp binds to its loop)."""

    def __init__(self, max_connections: int, exact_hosts: Collection[str] = (),
                 proxy_for: Callable[[str], str | None] | None = None, ssl: ssl_.SSLContext | None = None) -> None:
        self._max_connections = max_connections
        self._proxy_for = proxy_for
        self._ssl: ssl_.SSLContext | bool = ssl if ssl is not None else True
        self._resolver = PublicOnlyResolver(exact_hosts)
        self._timeout = aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=60, resolver=self._resolver)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                                  timeout=self._timeout)
        return self._session

    async def fetch_json(self, url: str, what: str) -> tuple[dict[str, Any], int]:
        """GET one presigned object: its JSON object and the bytes read (what a slice counts
        against its bound)."""
        internal = ObjectUnusable(f"{what}: object store host resolves to an internal address")
        try:
            self._resolver.check_literal(urlsplit(url).hostname or "")
            body = await self._get(url, what)
        except InternalAddress:  # a numeric host, refused before any connection
            raise internal from None
        except (ObjectUnusable, RunError):
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise RunError(f"{what}: object store timed out", transient=True) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, InternalAddress):  # a name the resolver refused
                raise internal from None
            raise RunError(f"{what}: object store unreachable ({type(exc).__name__})", transient=True) from None
        except (aiohttp.ClientError, OSError) as exc:  # a reset before or during the body: worth a retry
            raise RunError(f"{what}: object store unreachable ({type(exc).__name__})", transient=True) from None
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise RunError(f"{what}: object is not JSON", transient=False) from None
        if not isinstance(value, dict):
            raise RunError(f"{what}: object is not a JSON object", transient=False)
        return value, len(body)

    async def _get(self, url: str, what: str) -> bytes:
        async with self._client().get(
                URL(url, encoded=True), allow_redirects=False, ssl=self._ssl,
                proxy=self._proxy_for(url) if self._proxy_for is not None else None) as response:
            status = response.status
            if status in TRANSIENT_STATUSES:
                raise RunError(f"{what}: object store answered {status}", transient=True)
            if status != 200:
                raise ObjectUnusable(f"{what}: object store answered {status}")
            declared = response.content_length
            if declared is not None and declared > MAX_OBJECT_BYTES:
                raise RunError(f"{what}: object is larger than {MAX_OBJECT_BYTES} bytes", transient=False)
            chunks = []
            size = 0
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                size += len(chunk)
                if size > MAX_OBJECT_BYTES:
                    raise RunError(f"{what}: object is larger than {MAX_OBJECT_BYTES} bytes", transient=False)
                chunks.append(chunk)
            return b"".join(chunks)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
