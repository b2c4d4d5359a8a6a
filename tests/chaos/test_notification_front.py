"""The front door a calendar-backed chaos run puts before the instances: Graph's POSTs spread over the live ones,
a dead one skipped, nobody answering a 502 (so Graph retries)."""

from __future__ import annotations

import socket

import httpx
import pytest
from aiohttp import web

from chaos.organizer import NotificationFront

pytestmark = pytest.mark.unit


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _instance(name: str, port: int) -> web.AppRunner:
    async def answer(request: web.Request) -> web.Response:
        body = await request.text()
        return web.Response(status=202, text=f"{name}:{request.path_qs}:{body}", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_posts_go_round_robin_over_live_instances_and_skip_a_dead_one():
    live, dead, front_port = _port(), _port(), _port()
    runner = await _instance("one", live)
    front = NotificationFront(lambda: [dead, live])
    await front.start(front_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front_port}") as client:
            answers = [await client.post("/api/graph/notifications?validationToken=x", content=b"{}")
                       for _ in range(3)]
        # The dead port refuses the connection: the next instance answers, query string and body kept.
        assert [a.status_code for a in answers] == [202, 202, 202]
        assert answers[0].text == "one:/api/graph/notifications?validationToken=x:{}"
        assert front.forwarded == 3 and front.failed == 0
    finally:
        await front.stop()
        await runner.cleanup()


async def test_nobody_answering_is_a_502_graph_retries():
    front_port = _port()
    front = NotificationFront(lambda: [_port()])
    await front.start(front_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front_port}") as client:
            assert (await client.post("/api/graph/notifications", content=b"{}")).status_code == 502
        assert front.failed == 1
    finally:
        await front.stop()
