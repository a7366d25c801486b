"""httpx's API on aiohttp's connection pool, for the presigned-URL fetches.

Its resolver refuses loopback and private addresses for any host not listed exactly in
LSWH_S3_ALLOWED_HOSTS, so an allowed-looking name that resolves inward (DNS rebinding) is
never connected to: the check is on the address actually used, not on the name. aiohttp skips
the resolver for hosts that look numeric (`127.1` connects to 127.0.0.1), so those are checked
here before the request. A refusal is `AddressBlocked`: the object is not usable (the caller
falls back to the API), unlike a connection error, which is worth retrying.

httpcore's pool checks every pooled connection (a syscall each) on every request and release,
so its cost grows with concurrency: bench/workers.py measured a 1,000-run delivery at ~85 runs/s
with httpx's own transport and ~440 with this one. aiohttp is asked to send the URL verbatim
(`encoded=True`): re-quoting a presigned URL's path would break its signature.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl as ssl_
from collections.abc import AsyncIterator, Callable, Collection

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from yarl import URL

CHUNK_BYTES = 64 * 1024


class InternalAddress(OSError):
    """Raised by the resolver: the host resolves only to addresses we do not connect to."""


class AddressBlocked(httpx.ConnectError):
    """Nothing was sent: the host resolves only to internal addresses and is not listed exactly."""


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout("object store read timed out") from None
        except (aiohttp.ClientError, OSError) as exc:  # a reset mid-body: worth a retry
            raise httpx.ReadError(type(exc).__name__) from None

    async def aclose(self) -> None:
        self._response.release()


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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """GETs only need what a presigned object fetch needs: no redirects, no decompression (the
    size cap counts bytes as sent), and no proxy unless `proxy_for` is given (LSWH_S3_PROXY=env:
    lswh_core/egress.py picks the proxy per URL; the proxy's own host is then trusted like an
    exact allow-list entry, and the object's host is resolved by the proxy, not checked here)."""

    def __init__(self, max_connections: int, exact_hosts: Collection[str] = (),
                 proxy_for: Callable[[str], str | None] | None = None, ssl: ssl_.SSLContext | None = None) -> None:
        self._max_connections = max_connections
        self._proxy_for = proxy_for
        self._ssl = ssl
        self._resolver = PublicOnlyResolver(exact_hosts)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it binds to the running loop
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=60,
                                             resolver=self._resolver)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            self._resolver.check_literal(request.url.host)
        except InternalAddress as exc:
            raise AddressBlocked(str(exc)) from None
        try:
            response = await self._client().request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=[(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"],
                data=request.content or None,
                allow_redirects=False,
                proxy=self._proxy_for(str(request.url)) if self._proxy_for is not None else None,
                ssl=self._ssl if self._ssl is not None else True,
                timeout=aiohttp.ClientTimeout(sock_connect=timeout.get("connect"), sock_read=timeout.get("read")),
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout("object store timed out") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, InternalAddress):
                raise AddressBlocked(str(exc.os_error)) from None
            raise httpx.ConnectError(type(exc).__name__) from None
        except (aiohttp.ClientError, OSError) as exc:  # reset before the headers: worth a retry
            raise httpx.ConnectError(type(exc).__name__) from None
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
