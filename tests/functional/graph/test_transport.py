"""The Graph client's HTTP/1.1 transport under httpx: what goes out, what comes back, how failures look."""

import asyncio
import gzip
import socket
import ssl

import httpx
import pytest
from aiohttp import web

from shared.graph.gateway import classify_graph_error
from shared.graph.transport import Http1Transport
from tests.functional.local_app import serving

pytestmark = pytest.mark.e2e


@pytest.fixture
async def server():
    """A local HTTP server recording each request; its base URL."""
    seen: list[dict] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.raw_path, "headers": dict(request.headers),
                     "body": await request.read()})
        return web.json_response({"ok": True}, headers={"request-id": "r1"})

    async def compressed(_: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"value": "zipped"}'),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/gzip", compressed)
    app.router.add_get("/slow", slow)
    app.router.add_get("/moved", moved)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}", seen


@pytest.fixture
async def client():
    transport = Http1Transport(ssl_context=ssl.create_default_context())
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(1.0)) as http:
        yield http
    await transport.aclose()


async def test_request_goes_out_as_httpx_built_it(server, client):
    base, seen = server
    # GIVEN a path with percent-encoded segments and a JSON body
    response = await client.post(f"{base}/echo/users/a%40b.test/x%27y", json={"k": 1},
                                 headers={"Authorization": "Bearer t", "client-request-id": "c1"})
    # THEN the server sees the path unchanged, httpx's headers and the body
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert response.headers["request-id"] == "r1" and response.http_version == "HTTP/1.1"
    request = seen[0]
    assert request["path"] == "/echo/users/a%40b.test/x%27y"
    assert request["headers"]["Authorization"] == "Bearer t" and request["headers"]["client-request-id"] == "c1"
    assert request["headers"]["Content-Type"] == "application/json" and request["body"] == b'{"k":1}'


async def test_compressed_answer_is_decoded_once(server, client):
    base, _ = server
    response = await client.get(f"{base}/gzip")
    assert response.json() == {"value": "zipped"}


async def test_redirects_are_left_to_the_middleware(server, client):
    base, _ = server
    response = await client.get(f"{base}/moved")
    assert response.status_code == 302 and response.headers["Location"] == "/elsewhere"


async def test_read_timeout_is_httpx_read_timeout_and_a_graph_timeout(server, client):
    base, _ = server
    with pytest.raises(httpx.ReadTimeout) as caught:
        await client.get(f"{base}/slow")
    assert classify_graph_error(caught.value).reason == "graph_timeout"


async def test_refused_connection_is_httpx_connect_error_and_graph_unreachable(client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as caught:
        await client.get(f"http://127.0.0.1:{port}/")
    assert classify_graph_error(caught.value).reason == "graph_unreachable"


async def test_untrusted_certificate_is_a_connect_error(client):
    # GIVEN a TLS server whose certificate no default trust store accepts
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    async with serving(app, server_context) as port:
        # THEN the request fails to connect rather than trusting it
        with pytest.raises(httpx.ConnectError):
            await client.get(f"https://127.0.0.1:{port}/")


def test_environment_proxy_applies_unless_no_proxy_exempts_the_host(monkeypatch):
    # GIVEN HTTPS_PROXY with a NO_PROXY exemption, as httpx's own transport would honour them
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.contoso.test")
    transport = Http1Transport(ssl_context=ssl.create_default_context())
    # THEN Graph goes through the proxy and the exempt host does not
    assert transport._proxy(httpx.URL("https://graph.microsoft.com/v1.0/users")) == "http://proxy.internal:3128"
    assert transport._proxy(httpx.URL("https://graph.contoso.test/v1.0/users")) is None


def test_no_proxy_in_the_environment_means_a_direct_connection(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    transport = Http1Transport(ssl_context=ssl.create_default_context())
    assert transport._proxy(httpx.URL("https://graph.microsoft.com/v1.0/users")) is None
