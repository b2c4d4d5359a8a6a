"""A keep-alive HTTP/1.1 connection pool to one origin: under the Graph client (graph/transport.py) and the
table store (storage/table_rest.py).

Each event makes a Graph request and three table requests, and through Azure's worker aiohttp's share of them
was a third of the worker's CPU per event: aiohttp spends about 0.12 ms of CPU on each request here, this pool
0.03 ms (a table request with the client's own work 0.21 against 0.09 ms, a Graph call through msgraph-sdk
0.62 against 0.45 ms; docs/performance.md, section 4). Responses are parsed by httptools (llhttp, the parser
of Node.js and uvicorn), so content length, chunked bodies and keep-alive follow the RFC; the pool writes
the request, keeps the connections and, through a proxy, tunnels with CONNECT. Redirects, cookies and
content decoding are the caller's (httpx does them for Graph; the table service needs none).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

# A pooled connection idle longer than this is closed instead of reused: a server may have dropped it
# (aiohttp's default keep-alive timeout, which this pool replaced).
IDLE_SECONDS = 15.0
# Methods a server may receive twice without a second effect (RFC 9110, 9.2.2): only these are sent again
# when a kept connection fails before any answer; a POST or PATCH is sent again only if it never left.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class WireError(Exception):
    """The request got no complete answer: the connection failed, was closed early or sent a malformed one."""


class ConnectFailed(WireError):
    """No connection: refused, unreachable, the proxy's tunnel refused, or TLS failed (nothing was sent)."""


class _NotSent(WireError):
    """A kept connection was found closed before the request was written."""


@dataclass(frozen=True)
class Answer:
    """A response: its status, its headers (lower-cased names, repeats joined by a comma) and its body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection: one request in flight at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._parse_error: type[Exception] = httptools.HttpParserError
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.received = False  # any byte of the current answer
        self.reusable = False
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self._transport = cast(asyncio.Transport, transport)  # a stream connection's always is

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the request in flight, unless its answer was complete."""
        self.closed = True
        self.reusable = False
        self._fail(WireError(f"connection closed before the answer was complete ({exc or 'by the server'})"))

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a malformed answer ends the connection."""
        self.received = True
        try:
            self._parser.feed_data(data)
        except self._parse_error as exc:
            self._fail(WireError(f"malformed answer: {exc}"))
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one header (names lower-cased; a repeated header joined with a comma)."""
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        """Collect a piece of the body."""
        self._body.append(body)

    def on_message_complete(self) -> None:
        """Hand the whole answer to the waiting request."""
        self.reusable = bool(self._parser.should_keep_alive())
        answer = Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, error: WireError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def exchange(self, request: bytes) -> Answer:
        """Write one request and wait for its answer."""
        if self.closed or self._transport is None:
            raise _NotSent("connection already closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.received, self.reusable = False, False
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        """Close the connection (an unfinished answer fails)."""
        self.closed = True
        self.reusable = False
        if self._transport is not None:
            self._transport.close()


class _Tunnel(asyncio.Protocol):
    """A proxy connection until its answer to CONNECT: then TLS to the origin starts inside it."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the CONNECT in flight."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectFailed(f"proxy closed the connection ({exc or 'by the proxy'})"))

    def data_received(self, data: bytes) -> None:
        """Wait for the whole answer head; its status ends the wait."""
        self._buffer += data
        if b"\r\n\r\n" in self._buffer and self._waiter is not None and not self._waiter.done():
            status_line = self._buffer.split(b"\r\n", 1)[0].split()
            status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
            self._waiter.set_result(status)

    async def open(self, request: bytes) -> None:
        """Send CONNECT; WireError unless the proxy answers 2xx."""
        assert self._transport is not None  # create_connection made it
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        status = await self._waiter
        if not 200 <= status < 300:
            raise ConnectFailed(f"proxy refused the tunnel: {status or 'malformed answer'}")


class Http1Pool:
    """Keep-alive connections to one `scheme://host[:port]`, at most `limit` at once; make it inside its loop.

    A request without a complete answer within `timeout_seconds` (a free connection included) is a TimeoutError.
    With `proxy` (an http:// proxy URL, user and password allowed), an https origin is reached through a CONNECT
    tunnel and an http one by sending the proxy the absolute URL.
    """

    def __init__(self, origin: str, *, ssl_context: ssl.SSLContext | None = None, limit: int = 64,
                 timeout_seconds: float = 20.0, proxy: str | None = None) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Connection] = set()
        self._timeout_seconds = timeout_seconds
        self._origin = f"{parts.scheme}://{self._host_header}"
        self._proxy: tuple[str, int, dict[str, str]] | None = None
        if proxy:
            via = urlsplit(proxy)
            if via.scheme != "http" or not via.hostname:
                raise ValueError("a proxy must be an http:// URL")
            auth = {}
            if via.username is not None:
                pair = f"{unquote(via.username)}:{unquote(via.password or '')}".encode()
                auth["Proxy-Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            self._proxy = (via.hostname, via.port or 80, auth)

    async def request(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None,
                      *, timeout_seconds: float | None = None) -> Answer:
        """Send one request; WireError, or TimeoutError if no complete answer came back in time."""
        if self._proxy is not None and self._ssl is None:  # plain http through a proxy: the absolute URL
            target = self._origin + target
            headers = {**headers, **self._proxy[2]}
        head = _head(method, target, self._host_header, headers, body)
        message = head + body if body else head
        async with asyncio.timeout(timeout_seconds or self._timeout_seconds), self._slots:
            connection, reused = await self._connection()
            try:
                try:
                    answer = await connection.exchange(message)
                except WireError as exc:
                    unsent = isinstance(exc, _NotSent)
                    if not reused or connection.received or not (unsent or method in _IDEMPOTENT):
                        raise
                    # A kept connection the server had closed, nothing of the answer read: sent once more on a
                    # new connection if it never left or repeating it has no second effect.
                    connection.close()
                    self._open.discard(connection)
                    connection, _ = await self._connection(fresh=True)
                    answer = await connection.exchange(message)
            except BaseException:
                connection.close()  # failed, cancelled or timed out mid-answer: its state is unknown
                self._open.discard(connection)
                raise
            self._release(connection)
            return answer

    async def _connection(self, *, fresh: bool = False) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection, True
            connection.close()
            self._open.discard(connection)
        try:
            tunnel = self._proxy is not None and self._ssl is not None
            protocol = await (self._tunnel() if tunnel else self._direct())
        except OSError as exc:  # refused, unreachable, TLS failure
            via = f" through {self._proxy[0]}:{self._proxy[1]}" if self._proxy else ""
            where = f"{self._host}:{self._port}{via}"
            raise ConnectFailed(f"cannot connect to {where}: {type(exc).__name__}: {exc}") from exc
        self._open.add(protocol)
        return protocol, False

    async def _direct(self) -> _Connection:
        host, port = (self._proxy[0], self._proxy[1]) if self._proxy is not None else (self._host, self._port)
        _, protocol = await asyncio.get_running_loop().create_connection(
            _Connection, host, port, ssl=self._ssl, server_hostname=self._host if self._ssl is not None else None)
        return protocol

    async def _tunnel(self) -> _Connection:
        proxy, tls_context = self._proxy, self._ssl
        assert proxy is not None and tls_context is not None  # only https origins tunnel
        loop = asyncio.get_running_loop()
        transport, tunnel = await loop.create_connection(_Tunnel, proxy[0], proxy[1])
        try:
            authority = f"{self._host}:{self._port}"
            await tunnel.open(_head("CONNECT", authority, authority, proxy[2], None))
            connection = _Connection()
            tls = await loop.start_tls(transport, connection, tls_context, server_hostname=self._host)
        except BaseException:
            transport.close()
            raise
        if tls is None:
            raise ConnectFailed("the TLS handshake inside the tunnel did not complete")
        connection.connection_made(tls)  # start_tls does not call it
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not connection.closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
            self._open.discard(connection)

    async def aclose(self) -> None:
        """Close every connection."""
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()


def _head(method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The request line and headers; a CR or LF in any of them is refused (it would split the request)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers.items())]
    if method != "CONNECT":
        lines.append(f"Content-Length: {len(body) if body else 0}")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError("a request line or header holds CR or LF")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
