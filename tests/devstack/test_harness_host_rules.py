"""The stand-in host behaves like the Functions host where it matters for scale and crashes.

A message's lease is renewed while its invocation runs; a message that cannot be decoded goes to poison at
once, unrun; a timer runs on one instance at a time (a blob lease), and another takes over when it stops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import azure.functions as func
import pytest
import pytest_asyncio
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from devstack.harness import LocalHost
from devstack.harness.queue_rest import QueueRestClient, StorageAccount
from tests.functional.azurite import running_azurite

pytestmark = pytest.mark.e2e

HOST_JSON = {"extensions": {"queues": {"maxDequeueCount": 3, "visibilityTimeout": "00:00:00", "batchSize": 4,
                                       "newBatchThreshold": 2, "maxPollingInterval": "00:00:01"}},
             # The shortest lease Azure allows, and a quick retry, so a takeover is seen within the test.
             "singleton": {"listenerLockPeriod": "00:00:15", "listenerLockRecoveryPollingInterval": "00:00:01"}}

app = func.FunctionApp()
calls: dict[str, list[float]] = {"long": [], "echo": [], "tick": []}


@app.queue_trigger(arg_name="msg", queue_name="long-in", connection="AzureWebJobsStorage")
async def long_running(msg: func.QueueMessage) -> None:
    calls["long"].append(time.monotonic())
    await asyncio.sleep(float(msg.get_body()))


# Its own name: the worker keys functions by name, and test_harness.py's app, in the same process, has an `echo`.
@app.function_name("rules_echo")
@app.queue_trigger(arg_name="msg", queue_name="echo-in", connection="AzureWebJobsStorage")
async def echo(msg: func.QueueMessage) -> None:
    calls["echo"].append(time.monotonic())


@app.timer_trigger(schedule="* * * * * *", arg_name="timer")
async def every_second(timer: func.TimerRequest) -> None:
    calls["tick"].append(time.time())


@pytest.fixture(scope="module")
def azurite() -> Iterator[str]:
    with running_azurite() as conn:
        yield conn


@pytest_asyncio.fixture
async def conn(azurite: str) -> AsyncIterator[str]:
    for name in calls:
        calls[name].clear()
    yield azurite


async def _send(conn: str, queue: str, content: str) -> None:
    async with QueueClient.from_connection_string(conn, queue) as client:
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()
        await client.send_message(content)


async def test_a_long_invocation_keeps_its_message_hidden(conn: str) -> None:
    # GIVEN a host whose receive lease is 2 s, and a message whose invocation takes 5 s
    await _send(conn, "long-in", base64.b64encode(b"5").decode())
    rest = QueueRestClient(StorageAccount.from_connection_string(conn))
    try:
        async with LocalHost(app, connection_string=conn, host_json=HOST_JSON, lease_seconds=2,
                             poll_interval=0.1) as host:
            while not calls["long"]:
                await asyncio.sleep(0.05)
            # WHEN another consumer looks at the queue while the invocation runs, past the first lease
            seen = []
            for _ in range(8):
                await asyncio.sleep(0.5)
                seen += await rest.receive("long-in", 1, 1)
            await host.drain(timeout=20)
            stats = host.stats["long_running"]
        # THEN the message stayed hidden (renewed at half the lease), ran once, and was deleted
        assert seen == []
        assert stats == {"invoked": 1, "succeeded": 1, "failed": 0, "poisoned": 0}
        assert await rest.approximate_count("long-in") == 0
    finally:
        await rest.close()


async def test_a_message_that_cannot_be_decoded_goes_to_poison_at_once_unrun(conn: str) -> None:
    # GIVEN a message that is not base64, on a queue whose messageEncoding is base64
    await _send(conn, "echo-in", "not base64 !!")
    async with LocalHost(app, connection_string=conn, host_json=HOST_JSON) as host:
        await host.drain(timeout=20)
        stats = host.stats["rules_echo"]
    # THEN it is in the poison queue as it was sent, after one receive, and the function never ran
    assert stats == {"invoked": 0, "succeeded": 0, "failed": 0, "poisoned": 1}
    assert calls["echo"] == []
    async with QueueClient.from_connection_string(conn, "echo-in-poison") as poison:
        assert [m.content async for m in poison.receive_messages()] == ["not base64 !!"]


async def test_a_timer_runs_on_one_instance_and_another_takes_over(conn: str) -> None:
    # GIVEN three instances of one app (one host id) with a timer every second
    hosts = [LocalHost(app, connection_string=conn, host_json=HOST_JSON, host_id="timer-test") for _ in range(3)]
    for host in hosts:
        await host.start()
    try:
        await asyncio.sleep(6)
        # THEN each second's tick ran once, on one instance
        runners = [h for h in hosts if h.stats["every_second"]["invoked"]]
        assert len(runners) == 1
        ticks = sorted(calls["tick"])
        assert 2 <= len(ticks) <= 7
        assert len({int(t) for t in ticks}) == len(ticks), f"a second ran twice: {ticks}"
        # WHEN the instance holding the lock stops
        await runners[0].stop()
        hosts.remove(runners[0])
        before = len(calls["tick"])
        await asyncio.sleep(5)
        # THEN another one runs the timer from then on, still once per tick
        runners = [h for h in hosts if h.stats["every_second"]["invoked"]]
        assert len(runners) == 1 and len(calls["tick"]) > before
        ticks = sorted(calls["tick"])
        assert len({int(t) for t in ticks}) == len(ticks), f"a second ran twice: {ticks}"
    finally:
        for host in hosts:
            await host.stop()
