"""httpx's API on aiohttp's connection pool, for the presigned-URL fetches.

Its resolver refuses loopback and private addresses for any host not listed exactly in
LSWH_S3_ALLOWED_HOSTS, so an allowed-looking name that resolves inward (DNS rebinding) is
never connected to: the check is on the address actually used, not on the name.

httpcore's pool checks every pooled connection (a syscall each) on every request and release,
so its cost grows with concurrency: bench/workers.py measured a 1,000-run delivery at ~85 runs/s
with httpx's own transport and ~440 with this one. aiohttp is asked to send the URL verbatim
(`encoded=True`): re-quoting a presigned URL's path would break its signature.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Collection

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

CHUNK_BYTES = 64 * 1024


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout("object store read timed out") from None
        except aiohttp.ClientError as exc:
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
        if host.lower().rstrip(".") in self._exact:
            return found
        public = [r for r in found if ipaddress.ip_address(r["host"]).is_global]
        if not public:
            raise OSError(f"{host} resolves only to internal addresses")
        return public

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """GETs only need what a presigned object fetch needs: no proxies, no redirects, no
    decompression (the size cap counts bytes as sent)."""

    def __init__(self, max_connections: int, exact_hosts: Collection[str] = ()) -> None:
        self._max_connections = max_connections
        self._exact_hosts = exact_hosts
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it binds to the running loop
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=60,
                                             resolver=PublicOnlyResolver(self._exact_hosts))
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            response = await self._client().request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=[(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"],
                data=request.content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(sock_connect=timeout.get("connect"), sock_read=timeout.get("read")),
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout("object store timed out") from None
        except aiohttp.ClientError as exc:
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
