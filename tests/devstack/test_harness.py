"""End-to-end tests of the local Functions host against a real Azurite."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import socket
import subprocess
import time
import typing
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import azure.functions as func
import pytest
import pytest_asyncio
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devstack.harness import CronSchedule, LocalHost, QueueSettings, parse_timespan

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
KEY = "test-function-key"
HOST_JSON = {
    "version": "2.0",
    "extensions": {
        "queues": {
            "maxDequeueCount": 2,
            "visibilityTimeout": "00:00:00",
            "batchSize": 2,
            "newBatchThreshold": 1,
            "maxPollingInterval": "00:00:02",
        }
    },
}

# --------------------------------------------------------------------------- the app under test

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
seen: dict[str, list[object]] = {"contexts": [], "timer": []}
concurrency = {"now": 0, "max": 0}


@app.queue_trigger(arg_name="msg", queue_name="fan-in", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="single", queue_name="fan-single", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="many", queue_name="fan-many", connection="AzureWebJobsStorage")
def fan_out(
    msg: func.QueueMessage, single: func.Out[str],
    many: func.Out[typing.List[str]],  # noqa: UP006 - the worker refuses list[str] inside func.Out
    context: func.Context,
) -> None:
    seen["contexts"].append((context.function_name, context.invocation_id, msg.dequeue_count))
    payload = msg.get_json()
    single.set("single:{}".format(payload["n"]))
    many.set(["many:{}:a".format(payload["n"]), "many:{}:b".format(payload["n"])])


@app.queue_trigger(arg_name="msg", queue_name="always-fails", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="never-written", connection="AzureWebJobsStorage")
async def always_fails(msg: func.QueueMessage, out: func.Out[str]) -> None:
    out.set("should not be written")
    raise RuntimeError("boom")


@app.queue_trigger(arg_name="msg", queue_name="echo-in", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="$return", queue_name="echo-out", connection="AzureWebJobsStorage")
def echo(msg: func.QueueMessage) -> bytes:
    return msg.get_body()


@app.queue_trigger(arg_name="msg", queue_name="slow-in", connection="AzureWebJobsStorage")
async def slow(msg: func.QueueMessage) -> None:
    concurrency["now"] += 1
    concurrency["max"] = max(concurrency["max"], concurrency["now"])
    try:
        await asyncio.sleep(float(msg.get_body()))
    finally:
        concurrency["now"] -= 1


@app.route(route="items/{item_id}", methods=["GET", "POST"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    body = {"item_id": req.route_params["item_id"], "q": req.params.get("q"), "body": req.get_body().decode()}
    return func.HttpResponse(json.dumps(body), status_code=201, mimetype="application/json")


@app.route(route="ping", auth_level=func.AuthLevel.ANONYMOUS)
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong", headers={"X-Probe": "1"})


@app.route(route="admin/reports", auth_level=func.AuthLevel.ANONYMOUS)
def reports(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("never served")


@app.route(route="explode", auth_level=func.AuthLevel.ANONYMOUS)
async def explode(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("nope")


@app.timer_trigger(schedule="0 0 3 * * *", arg_name="timer")
@app.queue_output(arg_name="out", queue_name="timer-out", connection="AzureWebJobsStorage")
def nightly(timer: func.TimerRequest, out: func.Out[str]) -> None:
    seen["timer"].append(timer.past_due)
    out.set("tick")


# --------------------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def azurite() -> Iterator[str]:
    if not AZURITE.exists():
        pytest.skip("azurite is not installed under node_modules")
    queue_port, blob_port, table_port = _free_port(), _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            str(AZURITE), "--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
            "--loose",
            "--queueHost", "127.0.0.1", "--queuePort", str(queue_port),
            "--blobHost", "127.0.0.1", "--blobPort", str(blob_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(table_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", queue_port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                stderr = proc.communicate()[1].decode(errors="replace")
                pytest.fail(f"azurite did not start: {stderr}")
            time.sleep(0.1)
    yield (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
        f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
    )
    proc.terminate()
    proc.wait(timeout=10)


@pytest_asyncio.fixture
async def conn(azurite: str) -> AsyncIterator[str]:
    """The Azurite connection string, with every queue deleted so each test starts clean."""
    async with QueueServiceClient.from_connection_string(azurite) as service:
        async for queue in service.list_queues():
            await service.delete_queue(queue.name)
    concurrency.update(now=0, max=0)
    seen["contexts"].clear()
    seen["timer"].clear()
    yield azurite


def _client(conn: str, name: str, *, base64_policy: bool = True) -> QueueClient:
    if base64_policy:
        return QueueClient.from_connection_string(
            conn, name, message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
    return QueueClient.from_connection_string(conn, name)


async def _read_all(conn: str, name: str, *, base64_policy: bool = True) -> list[str]:
    async with _client(conn, name, base64_policy=base64_policy) as client:
        try:
            return [m.content async for m in client.receive_messages(max_messages=32, messages_per_page=32)]
        except ResourceNotFoundError:  # a queue that was never created holds nothing
            return []


async def _send(conn: str, name: str, *contents: str) -> None:
    async with _client(conn, name) as client:
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()
        for content in contents:
            await client.send_message(content)


# --------------------------------------------------------------------------- queue tests


async def test_queue_outputs_written_on_success(conn: str) -> None:
    async with LocalHost(app, connection_string=conn, host_json=HOST_JSON) as host:
        await _send(conn, "fan-in", json.dumps({"n": 1}), json.dumps({"n": 2}))
        await host.drain(timeout=20)
        assert host.stats["fan_out"] == {"invoked": 2, "succeeded": 2, "failed": 0, "poisoned": 0}

    assert sorted(await _read_all(conn, "fan-single")) == ["single:1", "single:2"]
    assert sorted(await _read_all(conn, "fan-many")) == ["many:1:a", "many:1:b", "many:2:a", "many:2:b"]
    assert await _read_all(conn, "fan-in") == []
    assert {(name, count) for name, _, count in seen["contexts"]} == {("fan_out", 1)}
    assert len({invocation for _, invocation, _ in seen["contexts"]}) == 2


async def test_failing_message_goes_to_poison_and_outputs_are_not_written(conn: str) -> None:
    async with LocalHost(app, connection_string=conn, host_json=HOST_JSON) as host:
        await _send(conn, "always-fails", "doomed")
        await host.drain(timeout=20)
        assert host.stats["always_fails"] == {"invoked": 2, "failed": 2, "succeeded": 0, "poisoned": 1}

    assert await _read_all(conn, "always-fails-poison") == ["doomed"]
    assert await _read_all(conn, "always-fails") == []
    assert await _read_all(conn, "never-written") == []


async def test_message_over_max_dequeue_count_is_poisoned_without_invoking(conn: str) -> None:
    await _send(conn, "always-fails", "worn-out")
    async with _client(conn, "always-fails") as client:
        # Simulate a crashing worker: receive three times without settling (maxDequeueCount is 2).
        for _ in range(3):
            [message] = [m async for m in client.receive_messages(max_messages=1, visibility_timeout=30)]
            await client.update_message(message.id, pop_receipt=message.pop_receipt, visibility_timeout=0)
    async with LocalHost(app, connection_string=conn, host_json=HOST_JSON) as host:
        await host.drain(timeout=20)
        assert host.stats["always_fails"] == {"invoked": 0, "failed": 0, "succeeded": 0, "poisoned": 1}
    assert await _read_all(conn, "always-fails-poison") == ["worn-out"]


async def test_base64_round_trip_and_return_binding(conn: str) -> None:
    text = 'héllo ✓ {"json": true}'
    async with LocalHost(app, connection_string=conn, host_json=HOST_JSON) as host:
        await _send(conn, "echo-in", text)  # sent through TextBase64EncodePolicy
        await host.drain(timeout=20)
        assert host.stats["echo"]["succeeded"] == 1
    [wire] = await _read_all(conn, "echo-out", base64_policy=False)
    assert wire == base64.b64encode(text.encode()).decode()
    assert TextBase64DecodePolicy().decode(wire, None) == text


async def test_invalid_base64_is_poisoned_unrun(conn: str) -> None:
    async with QueueClient.from_connection_string(conn, "echo-in") as client:
        await client.create_queue()
        await client.send_message("not base64 !!")
    async with LocalHost(app, connection_string=conn, host_json=HOST_JSON) as host:
        await host.drain(timeout=20)
        assert host.stats["echo"] == {"invoked": 0, "succeeded": 0, "failed": 0, "poisoned": 1}
    assert await _read_all(conn, "echo-in-poison", base64_policy=False) == ["not base64 !!"]


async def test_message_encoding_none(conn: str) -> None:
    host_json = {"extensions": {"queues": {**HOST_JSON["extensions"]["queues"], "messageEncoding": "none"}}}
    async with LocalHost(app, connection_string=conn, host_json=host_json) as host:
        await _send(conn, "echo-in")  # just creates the queue
        async with QueueClient.from_connection_string(conn, "echo-in") as client:
            await client.send_message("plain text")
        await host.drain(timeout=20)
    assert await _read_all(conn, "echo-out", base64_policy=False) == ["plain text"]


async def test_concurrency_is_batch_size_plus_new_batch_threshold(conn: str) -> None:
    # Uneven durations so a new batch arrives while older messages are still running.
    durations = ["0.2", "0.6"] * 6
    async with LocalHost(app, connection_string=conn, host_json=HOST_JSON, poll_interval=0.05) as host:
        await _send(conn, "slow-in", *durations)
        await host.drain(timeout=30)
        assert host.stats["slow"]["succeeded"] == len(durations)
    assert concurrency["max"] == 3


# --------------------------------------------------------------------------- HTTP and timers


async def test_http_function_auth_routes_and_errors(conn: str) -> None:
    host = LocalHost(app, connection_string=conn, host_json=HOST_JSON, http_port=0, function_key=KEY)
    async with host:
        assert host.http_base_url is not None
        base = host.http_base_url + "/api"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/items/42") as resp:
                assert resp.status == 401
                assert await resp.read() == b""
            async with http.get(base + "/items/42", headers={"x-functions-key": "wrong"}) as resp:
                assert resp.status == 401
            async with http.get(base + "/items/42?q=x", headers={"x-functions-key": KEY}) as resp:
                assert resp.status == 201
                assert resp.headers["Content-Type"].startswith("application/json")
                assert await resp.json() == {"item_id": "42", "q": "x", "body": ""}
            async with http.post(base + "/items/abc", params={"code": KEY}, data=b"payload") as resp:
                assert resp.status == 201
                assert (await resp.json())["body"] == "payload"
            async with http.delete(base + "/items/abc", params={"code": KEY}) as resp:
                assert resp.status == 404
            async with http.get(base + "/ping") as resp:
                assert resp.status == 200
                assert await resp.text() == "pong"
                assert resp.headers["X-Probe"] == "1"
            async with http.get(base + "/explode") as resp:
                assert resp.status == 500
            async with http.get(base + "/nowhere") as resp:
                assert resp.status == 404
            # The host keeps routes beginning with `admin` for itself: such a function is in error, never served.
            async with http.get(base + "/admin/reports") as resp:
                assert resp.status == 404
        assert host.stats["get_item"]["succeeded"] == 2
        assert host.stats["explode"]["failed"] == 1


async def test_fire_timer_writes_outputs(conn: str) -> None:
    async with LocalHost(app, connection_string=conn, host_json=HOST_JSON) as host:
        await host.fire_timer("nightly")
        assert host.stats["nightly"]["succeeded"] == 1
        with pytest.raises(KeyError):
            await host.fire_timer("fan_out")
    assert seen["timer"] == [False]
    assert await _read_all(conn, "timer-out") == ["tick"]


# --------------------------------------------------------------------------- pure parsing


def test_cron_schedule() -> None:
    t = dt.datetime(2026, 11, 2, 10, 15, 30, 500, tzinfo=dt.UTC)  # a Monday
    assert CronSchedule("*/5 * * * * *").next_after(t) == t.replace(second=35, microsecond=0)
    assert CronSchedule("0 0 3 * * *").next_after(t) == dt.datetime(2026, 11, 3, 3, tzinfo=dt.UTC)
    assert CronSchedule("0 30 9 * * 1-5").next_after(t) == dt.datetime(2026, 11, 3, 9, 30, tzinfo=dt.UTC)
    assert CronSchedule("0 0 0 * * SUN").next_after(t) == dt.datetime(2026, 11, 8, tzinfo=dt.UTC)
    assert CronSchedule("0,30 15 10 * * *").next_after(t) == dt.datetime(2026, 11, 3, 10, 15, tzinfo=dt.UTC)
    assert CronSchedule("0 0 0 29 2 *").next_after(t) == dt.datetime(2028, 2, 29, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        CronSchedule("* * * *")


def test_host_json_parsing() -> None:
    assert QueueSettings.from_host_json({}) == QueueSettings()
    settings = QueueSettings.from_host_json(HOST_JSON)
    assert (settings.batch_size, settings.new_batch_threshold, settings.max_dequeue_count) == (2, 1, 2)
    capped = QueueSettings.from_host_json({"extensions": {"queues": {"batchSize": 64}}})
    assert (capped.batch_size, capped.new_batch_threshold) == (32, 16)
    assert parse_timespan("00:01:30") == 90
    assert parse_timespan("1.00:00:00.5") == 86400.5
