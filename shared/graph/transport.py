"""An httpx transport that sends through an aiohttp connection pool, for the Graph client.

msgraph-sdk speaks httpx. httpcore's pool re-checks every pooled connection on each request and each
response (a getpeername() and a readability probe per idle connection), so with the two dozen HTTP/1.1
connections one instance keeps to Graph the pool costs more CPU than the request itself: 1.05 ms per
request here against 0.32 ms through aiohttp's per-host deque (docs/performance.md). Everything above the
transport (kiota's middleware, redirects, auth, timeouts) stays httpx's.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    import aiohttp


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx.AsyncBaseTransport over one aiohttp.ClientSession, made lazily inside the running loop."""

    def __init__(self, *, ssl_context: ssl.SSLContext, max_connections: int = 64,
                 keepalive_seconds: float = 15.0) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        """HTTPS_PROXY/HTTP_PROXY unless NO_PROXY exempts the host, as httpx's own transport would.

        Looked up once per scheme and host: aiohttp's trust_env does it in a thread on every request.
        """
        origin = (url.scheme, url.host)
        if origin not in self._proxies:
            from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

            proxies = getproxies_environment()
            proxy = proxies.get(url.scheme) or proxies.get("all")
            self._proxies[origin] = None if not proxy or proxy_bypass_environment(url.host, proxies) else proxy
        return self._proxies[origin]

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl_context, limit=self._max_connections,
                                             keepalive_timeout=self._keepalive_seconds)
            # auto_decompress off: httpx decodes Content-Encoding itself, as with its own transport.
            # Cookies stay httpx's business too.
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; aiohttp failures become the httpx exceptions callers classify."""
        import aiohttp
        from yarl import URL

        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(total=None, connect=timeouts.get("pool"),
                                        sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read"))
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        body = await request.aread()
        try:
            async with self._client().request(
                    request.method, URL(str(request.url), encoded=True), headers=headers, data=body or None,
                    allow_redirects=False, timeout=timeout, skip_auto_headers=("Content-Type",),
                    proxy=self._proxy(request.url)) as response:
                content = await response.read()
        except Exception as exc:
            raise _httpx_error(exc, request) from exc
        return httpx.Response(response.status, headers=list(response.raw_headers),
                              stream=httpx.ByteStream(content), request=request,
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": (response.reason or "").encode("latin-1")})

    async def aclose(self) -> None:
        """Close the pool's connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _httpx_error(exc: BaseException, request: httpx.Request) -> BaseException:
    """The httpx exception httpx's own transport would have raised for the same failure."""
    import aiohttp

    message = f"{type(exc).__name__}: {exc}"
    mapped: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        mapped = httpx.ConnectTimeout
    elif isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        mapped = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError):  # DNS, refused, TLS handshake and certificate errors
        mapped = httpx.ConnectError
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        mapped = httpx.RemoteProtocolError
    elif isinstance(exc, aiohttp.InvalidURL):
        mapped = httpx.UnsupportedProtocol
    elif isinstance(exc, (aiohttp.ClientError, OSError)):
        mapped = httpx.ReadError
    else:
        return exc
    return mapped(message, request=request)

