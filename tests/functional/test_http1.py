"""The table store's HTTP/1.1 pool against servers that answer byte for byte as scripted."""

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from shared.common import http1
from shared.common.http1 import Http1Pool, WireError

pytestmark = pytest.mark.e2e

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One request off the stream: its request line, headers (lower-cased) and body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


@asynccontextmanager
async def opened(pool: Http1Pool) -> AsyncIterator[Http1Pool]:
    """The pool, its connections closed at the end."""
    try:
        yield pool
    finally:
        await pool.aclose()


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[tuple[str, dict]]:
    """A server running `handler` per connection; its origin and the state the handler keeps."""
    state: dict = {"connections": 0, "requests": []}

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        try:
            await handler(reader, writer, state)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.close()


async def keep_alive(reader, writer, state):
    """Answers every request on the connection with 200 and a JSON body naming the request's number."""
    while True:
        line, headers, body = await read_request(reader)
        state["requests"].append((line, headers, body))
        payload = b'{"n":%d}' % len(state["requests"])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: W/\"1\"\r\n"
                     b"x-ms-Continuation-NextRowKey: r2\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()


async def test_requests_reuse_one_kept_connection_and_send_what_was_asked():
    async with scripted(keep_alive) as (origin, state):
        async with opened(Http1Pool(origin + "/devstoreaccount1")) as pool:
            first = await pool.request("POST", "/devstoreaccount1/t", {"x-ms-version": "2019-02-02"}, b'{"a":1}')
            second = await pool.request("GET", "/devstoreaccount1/t()", {}, None)
    assert (first.status, first.body, second.body) == (200, b'{"n":1}', b'{"n":2}')
    # THEN header names come back lower-cased, values as sent
    assert first.headers["etag"] == 'W/"1"' and first.headers["x-ms-continuation-nextrowkey"] == "r2"
    assert state["connections"] == 1
    line, headers, body = state["requests"][0]
    assert line == "POST /devstoreaccount1/t HTTP/1.1" and body == b'{"a":1}'
    assert headers["host"] == origin.removeprefix("http://") and headers["content-length"] == "7"
    assert headers["x-ms-version"] == "2019-02-02"


async def test_a_chunked_answer_is_read_whole():
    async def chunked(reader, writer, state):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"4\r\n{\"a\"\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the rest arrives in a second packet
        writer.write(b"3\r\n:1}\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with scripted(chunked) as (origin, _):
        async with opened(Http1Pool(origin)) as pool:
            answer = await pool.request("GET", "/x", {})
    assert answer.body == b'{"a":1}'


async def test_connection_close_is_not_reused():
    async def close_each(reader, writer, state):
        await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()

    async with scripted(close_each) as (origin, state):
        async with opened(Http1Pool(origin)) as pool:
            for _ in range(3):
                assert (await pool.request("DELETE", "/x", {})).status == 204
    assert state["connections"] == 3


async def test_a_kept_connection_the_server_dropped_is_retried_once_on_a_new_one():
    async def one_per_connection(reader, writer, state):
        # Keeps the connection open after answering (no Connection: close), then drops it unannounced on the
        # next request, as a server does when its idle timeout ends as the request arrives.
        await read_request(reader)
        state["requests"].append(1)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        await reader.read(1)

    async with scripted(one_per_connection) as (origin, state):
        async with opened(Http1Pool(origin)) as pool:
            await pool.request("PUT", "/x", {}, b"{}")
            await pool.request("PUT", "/x", {}, b"{}")
    assert state["connections"] == 2 and len(state["requests"]) == 2


async def test_a_post_that_left_on_a_dropped_kept_connection_is_not_sent_again():
    async def one_per_connection(reader, writer, state):
        await read_request(reader)
        state["requests"].append(1)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        await reader.read(1)  # the next request arrives, and the connection is dropped unanswered

    async with scripted(one_per_connection) as (origin, state):
        async with opened(Http1Pool(origin)) as pool:
            await pool.request("POST", "/x", {}, b"{}")
            # THEN the caller decides: the server may have acted on it (its retry policy knows the write)
            with pytest.raises(WireError, match="closed before the answer"):
                await pool.request("POST", "/x", {}, b"{}")
    assert state["connections"] == 1


async def test_a_new_connection_closed_before_answering_is_a_wire_error():
    async def hang_up(reader, writer, state):
        await read_request(reader)

    async with scripted(hang_up) as (origin, _):
        async with opened(Http1Pool(origin)) as pool:
            with pytest.raises(WireError, match="closed before the answer"):
                await pool.request("GET", "/x", {})


async def test_a_malformed_answer_is_a_wire_error():
    async def garbage(reader, writer, state):
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with scripted(garbage) as (origin, _):
        async with opened(Http1Pool(origin)) as pool:
            with pytest.raises(WireError, match="malformed"):
                await pool.request("GET", "/x", {})


async def test_no_answer_in_time_is_a_timeout_and_the_connection_is_not_kept():
    async def silent(reader, writer, state):
        await read_request(reader)
        await reader.read()

    async with scripted(silent) as (origin, state):
        async with opened(Http1Pool(origin, timeout_seconds=0.2)) as pool:
            with pytest.raises(TimeoutError):
                await pool.request("GET", "/x", {})
            with pytest.raises(TimeoutError):
                await pool.request("GET", "/x", {})
    assert state["connections"] == 2


async def test_nothing_listening_is_a_wire_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = Http1Pool(f"http://127.0.0.1:{port}")
    with pytest.raises(WireError, match="cannot connect"):
        await pool.request("GET", "/x", {})


async def test_an_idle_connection_past_its_keep_alive_is_replaced(monkeypatch):
    async with scripted(keep_alive) as (origin, state):
        async with opened(Http1Pool(origin)) as pool:
            await pool.request("GET", "/x", {})
            monkeypatch.setattr(http1, "IDLE_SECONDS", 0.0)
            await pool.request("GET", "/x", {})
    assert state["connections"] == 2


async def test_at_most_limit_connections_at_once():
    async def slow(reader, writer, state):
        while True:
            await read_request(reader)
            state["live"] = state.get("live", 0) + 1
            state["peak"] = max(state.get("peak", 0), state["live"])
            await asyncio.sleep(0.05)
            state["live"] -= 1
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with scripted(slow) as (origin, state):
        async with opened(Http1Pool(origin, limit=3)) as pool:
            await asyncio.gather(*(pool.request("GET", "/x", {}) for _ in range(9)))
    assert state["peak"] == 3 and state["connections"] == 3


def test_a_header_holding_cr_or_lf_is_refused_before_anything_is_sent():
    pool_head = http1._head
    with pytest.raises(ValueError, match="CR or LF"):
        pool_head("GET", "/x", "h", {"If-Match": 'W/"1"\r\nX-Injected: 1'}, None)
    with pytest.raises(ValueError, match="CR or LF"):
        pool_head("GET", "/x\nGET /y", "h", {}, None)


def test_only_http_origins_are_accepted():
    with pytest.raises(ValueError, match="not an http"):
        Http1Pool("ftp://example.com")


@asynccontextmanager
async def tls_server(ca) -> AsyncIterator[str]:
    """A keep-alive TLS server with a certificate from `ca` (a trustme CA); its origin."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    state: dict = {"connections": 0, "requests": []}

    async def on_connect(reader, writer):
        try:
            await keep_alive(reader, writer, state)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_https_verifies_the_certificate_against_the_context_it_is_given():
    import ssl

    import trustme

    ca = trustme.CA()
    async with tls_server(ca) as origin:
        # GIVEN the default trust store: the server's certificate is refused
        untrusting = Http1Pool(origin)
        with pytest.raises(WireError, match="cannot connect"):
            await untrusting.request("GET", "/x", {})
        # GIVEN a context trusting the CA: the answer comes back over TLS
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with opened(Http1Pool(origin, ssl_context=context)) as trusting:
            assert (await trusting.request("GET", "/x", {})).body == b'{"n":1}'


@asynccontextmanager
async def proxy_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A forward proxy: CONNECT tunnels, absolute-URL requests forwarded; its URL (with a user) and what it saw."""
    seen: list[str] = []

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def on_connect(reader, writer):
        line, headers, body = await read_request(reader)
        seen.append(f"{line} auth={headers.get('proxy-authorization', '-')}")
        method, target, _ = line.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            return
        parts = target.split("/", 3)  # http://host:port/path
        host, port = parts[2].rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        up_writer.write(f"{method} /{parts[3]} HTTP/1.1\r\nHost: {parts[2]}\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n".encode() + body)
        await up_writer.drain()
        head = await up_reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        writer.write(head + await up_reader.readexactly(length))
        await writer.drain()
        up_writer.close()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield f"http://user:p%40ss@127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        server.close()


async def test_https_through_a_proxy_goes_in_a_connect_tunnel_with_the_proxy_credentials():
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with tls_server(ca) as origin, proxy_server() as (proxy, seen):
        async with opened(Http1Pool(origin, ssl_context=context, proxy=proxy)) as pool:
            first = await pool.request("GET", "/x", {})
            second = await pool.request("GET", "/x", {})
    # THEN one tunnel carried both requests, TLS end to end with the origin
    assert (first.body, second.body) == (b'{"n":1}', b'{"n":2}')
    authority = origin.removeprefix("https://")
    assert seen == [f"CONNECT {authority} HTTP/1.1 auth=Basic dXNlcjpwQHNz"]  # user:p@ss


async def test_http_through_a_proxy_sends_the_absolute_url():
    async with scripted(keep_alive) as (origin, state), proxy_server() as (proxy, seen):
        async with opened(Http1Pool(origin, proxy=proxy)) as pool:
            answer = await pool.request("GET", "/devstoreaccount1/t", {})
    assert answer.body == b'{"n":1}'
    assert seen == [f"GET {origin}/devstoreaccount1/t HTTP/1.1 auth=Basic dXNlcjpwQHNz"]
    assert state["requests"][0][0] == "GET /devstoreaccount1/t HTTP/1.1"


async def test_a_proxy_refusing_the_tunnel_is_a_connect_failure():
    async def refuse(reader, writer, state):
        await read_request(reader)
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with scripted(refuse) as (proxy, _):
        pool = Http1Pool("https://graph.contoso.test", proxy=proxy)
        with pytest.raises(http1.ConnectFailed, match="proxy refused the tunnel: 407"):
            await pool.request("GET", "/x", {})
