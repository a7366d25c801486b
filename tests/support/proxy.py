"""A small forward proxy on loopback, in the test process: plain HTTP requests in absolute form
(`GET http://host:port/path HTTP/1.1`) and CONNECT tunnels, as HTTP_PROXY/HTTPS_PROXY clients
send them. It adds a header to every plain request it forwards (the stand-in's
`--require-header` refuses requests without it, so a request that went around the proxy fails)
and requires the credentials it was given (`Proxy-Authorization: Basic`, answering 407 without).

Each forwarded request is sent with `Connection: close`, so a connection carries one request and
the rest of the stream is piped unparsed."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import Counter
from urllib.parse import urlsplit

HEAD_LIMIT = 65_536


class ForwardProxy:
    def __init__(self, *, add_header: tuple[str, str], credentials: tuple[str, str] | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        self.add_header = add_header
        self.credentials = credentials
        # Names only the proxy can resolve (e.g. langsmith.test -> 127.0.0.1): a client that
        # went around the proxy cannot reach them at all.
        self.hosts = hosts or {}
        self.forwarded: Counter[str] = Counter()  # "METHOD host:port" -> requests
        self.paths: Counter[str] = Counter()  # "METHOD /path" (no query: it may hold a signature)
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    def url(self) -> str:
        if self.credentials is None:
            return f"http://127.0.0.1:{self.port}"
        user, password = self.credentials
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def total(self) -> int:
        return sum(self.forwarded.values())

    def stop(self) -> None:
        def close() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(5)
        self._loop.close()

    def _authorized(self, headers: list[tuple[str, str]]) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return any(k.lower() == "proxy-authorization" and v.strip() == expected for k, v in headers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        if not self._authorized(headers):
            self.refused += 1
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            upstream_reader, upstream_writer = await asyncio.open_connection(self.hosts.get(host, host), int(port))
            self.forwarded[f"CONNECT {target}"] += 1
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            parts = urlsplit(target)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            hostname = parts.hostname or ""
            upstream_reader, upstream_writer = await asyncio.open_connection(self.hosts.get(hostname, hostname),
                                                                             parts.port or 80)
            self.forwarded[f"{method} {parts.hostname}:{parts.port or 80}"] += 1
            self.paths[f"{method} {parts.path}"] += 1
            kept = [(k, v) for k, v in headers
                    if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")]
            kept += [self.add_header, ("Connection", "close")]
            upstream_writer.write(f"{method} {path} {version}\r\n".encode("latin-1")
                                  + "".join(f"{k}: {v}\r\n" for k, v in kept).encode("latin-1") + b"\r\n")
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(HEAD_LIMIT):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
