"""The stand-in host's own CPU per message: a do-nothing queue function with two outputs, through Azurite.

The function sets two outputs, as process_appointment does (a result and a webhook), and does nothing
else, so every CPU second of the process is the host's: receive, decode, invoke, two output writes, delete.
Run in a fresh child (`python -m bench.host_overhead QUEUE_URL_CONNECTION_STRING [N] [--profile FILE]`);
prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import time
import uuid
from typing import Any

import azure.functions as func

NOOP_QUEUE = "bench-host-in"
NOOP_RESULTS = "bench-host-results"
NOOP_OUTBOX = "bench-host-outbox"

app = func.FunctionApp()


@app.function_name("noop")
@app.queue_trigger(arg_name="msg", queue_name=NOOP_QUEUE, connection="AzureWebJobsStorage")
@app.queue_output(arg_name="results", queue_name=NOOP_RESULTS, connection="AzureWebJobsStorage")
@app.queue_output(arg_name="outbox", queue_name=NOOP_OUTBOX, connection="AzureWebJobsStorage")
async def noop(msg: func.QueueMessage, results: func.Out[str], outbox: func.Out[str]) -> None:
    """Two outputs and nothing else: the host's share of an invocation."""
    body = msg.get_body().decode()
    results.set(body)
    outbox.set(body)


async def measure(connection_string: str, n: int, profile: str | None = None) -> dict[str, Any]:
    """Enqueue n messages, then time the host until all n are settled (process CPU and wall clock)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueServiceClient

    from bench.common import HOST_JSON
    from devstack.harness import LocalHost

    tag = uuid.uuid4().hex[:8]
    async with QueueServiceClient.from_connection_string(connection_string) as service:
        for name in (NOOP_QUEUE, NOOP_RESULTS, NOOP_OUTBOX):
            with contextlib.suppress(ResourceExistsError):
                await service.get_queue_client(name).create_queue()
            await service.get_queue_client(name).clear_messages()
        inbox = service.get_queue_client(NOOP_QUEUE, message_encode_policy=TextBase64EncodePolicy())
        gate = asyncio.Semaphore(32)

        async def send(i: int) -> None:
            async with gate:
                await inbox.send_message(json.dumps({"id": f"{tag}-{i}", "pad": "x" * 300}))

        await asyncio.gather(*(send(i) for i in range(n)))

    host = LocalHost(app, connection_string=connection_string, host_json=HOST_JSON, poll_interval=0.05,
                     max_polling_cap=0.2)
    profiler = cProfile.Profile() if profile else None
    async with host:
        stats = host.stats["noop"]
        if profiler:
            profiler.enable()
        started, cpu = time.perf_counter(), time.process_time()
        while stats["succeeded"] + stats["failed"] < n:
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"{n} messages not settled in 300 s: {stats}")
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
    return {"messages": n, "seconds": elapsed, "cpu_seconds": cpu, "cpu_ms_per_message": cpu * 1000 / n,
            "failed": stats["failed"]}


def main() -> None:
    """`python -m bench.host_overhead CONNECTION_STRING [N]`."""
    parser = argparse.ArgumentParser(prog="python -m bench.host_overhead")
    parser.add_argument("connection_string")
    parser.add_argument("n", type=int, nargs="?", default=1000)
    parser.add_argument("--profile", help="write cProfile stats of the measured part here")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.connection_string, args.n, args.profile))))


if __name__ == "__main__":
    main()
