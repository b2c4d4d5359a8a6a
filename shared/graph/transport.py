"""An httpx transport over the keep-alive HTTP/1.1 pool (shared/common/http1.py), for the Graph client.

msgraph-sdk speaks httpx. httpcore's pool re-checks every pooled connection on each request and each
response (a getpeername() and a readability probe per idle connection), so with the two dozen HTTP/1.1
connections one instance keeps to Graph the pool costs more CPU than the request itself: 1.05 ms per
request here, 0.32 ms through aiohttp's per-host deque, and less again through this pool (a whole
join-URL call through msgraph-sdk: 0.62 ms over aiohttp, 0.45 ms over this pool; docs/performance.md).
Everything above the transport (kiota's middleware, redirects, auth, timeouts, content decoding) stays
httpx's.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from shared.common.http1 import Http1Pool

# The pool writes these itself (Host, and the body's length once httpx has read it whole).
_POOL_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding"})


class Http1Transport(httpx.AsyncBaseTransport):
    """httpx.AsyncBaseTransport over one HTTP/1.1 pool per origin, made lazily inside the running loop."""

    def __init__(self, *, ssl_context: ssl.SSLContext, max_connections: int = 64,
                 timeout_seconds: float = 30.0) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._timeout_seconds = timeout_seconds
        self._pools: dict[tuple[str, str, int | None], Http1Pool] = {}
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        """HTTPS_PROXY/HTTP_PROXY unless NO_PROXY exempts the host, as httpx's own transport would.

        Looked up once per scheme and host.
        """
        origin = (url.scheme, url.host)
        if origin not in self._proxies:
            from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

            proxies = getproxies_environment()
            proxy = proxies.get(url.scheme) or proxies.get("all")
            self._proxies[origin] = None if not proxy or proxy_bypass_environment(url.host, proxies) else proxy
        return self._proxies[origin]

    def _pool(self, url: httpx.URL) -> Http1Pool:
        key = (url.scheme, url.host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            from shared.common.http1 import Http1Pool

            origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
            pool = Http1Pool(origin, ssl_context=self._ssl_context, limit=self._max_connections,
                             timeout_seconds=self._timeout_seconds, proxy=self._proxy(url))
            self._pools[key] = pool
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; the pool's failures become the httpx exceptions callers classify."""
        from shared.common.http1 import ConnectFailed, WireError

        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        limit = max((value for value in timeouts.values() if value), default=None)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers.raw
                   if name.lower() not in _POOL_HEADERS}
        body = await request.aread()
        try:
            answer = await self._pool(request.url).request(
                request.method, request.url.raw_path.decode("ascii"), headers, body or None, timeout_seconds=limit)
        except ConnectFailed as exc:  # DNS, refused, TLS handshake and certificate errors, a refused tunnel
            raise httpx.ConnectError(str(exc), request=request) from exc
        except WireError as exc:  # closed before the whole answer, or a malformed one
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no answer within {limit or self._timeout_seconds} s", request=request) from exc
        return httpx.Response(answer.status, headers=list(answer.headers.items()),
                              stream=httpx.ByteStream(answer.body), request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        """Close every pool's connections."""
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()
