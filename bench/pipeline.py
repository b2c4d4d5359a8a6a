"""Items 3-6 in one worker process: the queue function called in-process, N at a time, against the stack.

Run by `python -m bench` in a fresh child (`python -m bench.pipeline ENDPOINTS_JSON PHASE`), so its memory
and imports are the worker's alone. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from bench.common import (
    MEETING_ID,
    ORGANIZER,
    admin,
    create_event_text,
    event_text,
    queue_concurrency,
    rss_mb,
    run_id,
    set_graph_latency,
    stack_settings,
    worker_logging,
)

Invoke = Callable[[str], Awaitable[bool]]
OVERHEAD_ROUNDS = 7
# Idempotency tables made by this process's runs; dropped at exit.
_TABLES: list[str] = []


async def drive(invoke: Invoke, texts: Iterable[str], concurrency: int) -> tuple[float, int, int]:
    """Run invoke over texts with at most `concurrency` in flight; (seconds, ok, failed)."""
    items = iter(texts)
    counts = [0, 0]

    async def worker() -> None:
        for text in items:  # one shared iterator: each text is taken by exactly one worker
            try:
                ok = await invoke(text)
            except Exception:
                ok = False
            counts[0 if ok else 1] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, counts[0], counts[1]


def events(n: int, prefix: str | None = None) -> list[str]:
    """n distinct appointment events for the seeded organizer's meeting."""
    tag = prefix or run_id()
    return [event_text(f"bench-{tag}-{i}") for i in range(n)]


class Worker:
    """The function app in Azure's Python worker: indexed once, its queue function invoked per message."""

    def __init__(self) -> None:
        import function_app
        from devstack.harness.calls import call_queue
        from devstack.harness.worker import Worker as RuntimeWorker

        self.module = function_app
        self._runtime, self._call_queue = RuntimeWorker, call_queue
        self._worker: Any = None

    def fresh_services(self, *, in_memory_idempotency: bool = False) -> Any:
        """New worker services (empty token cache, new clients), as after a worker restart."""
        from shared.services import Services
        from shared.settings import load_settings
        from shared.testing.idempotency import InMemoryIdempotencyStore

        # A new, empty idempotency table per run: Azurite's in-memory table gets slower as it fills
        # (its cost per insert grows with the row count), which Azure Table storage does not.
        table = f"bench{run_id()}"
        os.environ["IDEMPOTENCY_TABLE"] = table
        os.environ["APPOINTMENTS_TABLE"] = table + "apts"
        _TABLES.extend((table, table + "apts"))
        services = Services(load_settings())
        if in_memory_idempotency:
            services.idempotency = InMemoryIdempotencyStore()  # type: ignore[misc]
        self.module.services = services
        return services

    async def invoke(self, text: str) -> bool:
        """One queue-triggered invocation through the worker, its outputs collected as the host would."""
        if self._worker is None:
            self._worker = await self._runtime.for_script(self.module.__file__)
        called = await self._call_queue(self._worker, "process_appointment", text)
        return bool(called.queues.get("results"))


async def raw_httpx(endpoints: dict[str, Any], token: str, n: int, concurrency: int,
                    app_transport: bool = False) -> tuple[float, int, int]:
    """The same Graph request as the app, made with a bare httpx client.

    By default httpx's own transport (what the issue's baseline names); with app_transport, over the
    HTTP/1.1 transport the app's Graph client uses, to show what the pipeline adds above the wire.
    """
    import httpx

    from shared.graph.transport import Http1Transport

    context = ssl.create_default_context()
    context.load_verify_locations(cafile=endpoints["ca_bundle"])
    url = (f"{endpoints['graph']['base_url']}/users/{ORGANIZER}/onlineMeetings/{MEETING_ID}"
           "/getVirtualAppointmentJoinWebUrl()")
    transport = Http1Transport(ssl_context=context) if app_transport else None
    async with httpx.AsyncClient(verify=context, http2=True, timeout=10, transport=transport,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)) as client:
        async def call(_: str) -> bool:
            response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
            return response.status_code == 200 and bool(response.json().get("value"))

        await drive(call, ["warm"] * concurrency, concurrency)
        result = await drive(call, ["x"] * n, concurrency)
    if transport is not None:
        await transport.aclose()
    return result


def _entra(endpoints: dict[str, Any], path: str, method: str = "GET", body: Any = None) -> Any:
    return admin(endpoints["entra"]["admin_url"] + path, endpoints["ca_bundle"], method, body)


async def throughput(endpoints: dict[str, Any], concurrency: int, latency_ms: float) -> dict[str, Any]:
    """Items 3 and 4 and the table store's share, in one worker."""
    worker = Worker()
    services = worker.fresh_services()
    out: dict[str, Any] = {"concurrency": concurrency, "latency_ms": latency_ms}
    set_graph_latency(endpoints, 0)
    await drive(worker.invoke, events(100), concurrency)  # warm: clients built, token cached, table made

    set_graph_latency(endpoints, latency_ms)
    n = concurrency * 25
    seconds, ok, failed = await drive(worker.invoke, events(n), concurrency)
    out["latency_run"] = {"events": n, "ok": ok, "failed": failed, "seconds": seconds}

    # Item 4: pipeline and raw calls alternate, so a noisy neighbour hits both sides of a round alike;
    # the figure is the median of the rounds' ratios.
    set_graph_latency(endpoints, 0)
    n = 1000
    token = await services.credentials.token_for(ORGANIZER)
    rounds: dict[str, list[dict[str, Any]]] = {"pipeline": [], "raw": [], "raw_app_transport": []}
    cpu_ms: list[float] = []
    await drive(worker.invoke, events(n), concurrency)  # warm at zero latency
    for _ in range(OVERHEAD_ROUNDS):
        started = time.process_time()
        seconds, ok, failed = await drive(worker.invoke, events(n), concurrency)
        cpu_ms.append((time.process_time() - started) * 1000 / n)
        rounds["pipeline"].append({"events": n, "ok": ok, "failed": failed, "seconds": seconds})
        started = time.process_time()
        seconds, ok, failed = await raw_httpx(endpoints, token, n, concurrency)
        rounds["raw"].append({"calls": n, "ok": ok, "failed": failed, "seconds": seconds,
                              "cpu_ms_per_call": (time.process_time() - started) * 1000 / n})
        seconds, ok, failed = await raw_httpx(endpoints, token, n, concurrency, app_transport=True)
        rounds["raw_app_transport"].append({"calls": n, "ok": ok, "failed": failed, "seconds": seconds})
    out["overhead_rounds"] = rounds
    out["zero_latency_cpu_ms_per_event"] = statistics.median(cpu_ms)

    # Diagnostic only: the same pipeline with the idempotency records kept in memory, to show the
    # table store's share. The app itself always uses the table store.
    worker.fresh_services(in_memory_idempotency=True)
    await drive(worker.invoke, events(50), concurrency)
    seconds, ok, failed = await drive(worker.invoke, events(n), concurrency)
    out["in_memory_idempotency_run"] = {"events": n, "ok": ok, "failed": failed, "seconds": seconds}
    set_graph_latency(endpoints, latency_ms)
    n = concurrency * 25
    seconds, ok, failed = await drive(worker.invoke, events(n), concurrency)
    out["in_memory_idempotency_latency_run"] = {"events": n, "ok": ok, "failed": failed, "seconds": seconds}
    set_graph_latency(endpoints, 0)
    return out


async def create(endpoints: dict[str, Any], concurrency: int, latency_ms: float) -> dict[str, Any]:
    """The create path in one worker: events without a meeting, each createOrGet then the join URL (two Graph
    calls, each at `latency_ms`), `concurrency` at a time; ideal = concurrency / (2 x latency)."""
    worker = Worker()
    worker.fresh_services()
    tag = run_id()
    set_graph_latency(endpoints, 0)
    await drive(worker.invoke, (create_event_text(f"warm-{tag}-{i}") for i in range(100)), concurrency)
    set_graph_latency(endpoints, latency_ms)
    n = concurrency * 25
    started = time.process_time()
    seconds, ok, failed = await drive(worker.invoke, (create_event_text(f"create-{tag}-{i}") for i in range(n)),
                                      concurrency)
    cpu = time.process_time() - started
    set_graph_latency(endpoints, 0)
    return {"concurrency": concurrency, "latency_ms": latency_ms,
            "create_run": {"events": n, "ok": ok, "failed": failed, "seconds": seconds, "cpu_seconds": cpu}}


async def tokens(endpoints: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """Item 5: token-endpoint calls for 1,000 events of one organizer, at the default and a short lifetime."""
    worker = Worker()
    out: dict[str, Any] = {}
    set_graph_latency(endpoints, 0)
    for name, lifetime in (("default_lifetime", None), ("short_lifetime", 301)):
        _entra(endpoints, "/reset", "POST")
        if lifetime is not None:
            _entra(endpoints, "/config", "PUT", {"access_token_lifetime": lifetime})
        config = _entra(endpoints, "/config", "PUT", {})
        worker.fresh_services()
        seconds, ok, failed = await drive(worker.invoke, events(1000), concurrency)
        stats = _entra(endpoints, "/stats")
        out[name] = {"access_token_lifetime": config["access_token_lifetime"], "events": 1000, "ok": ok,
                     "failed": failed, "seconds": seconds, "token_requests": stats["token_requests"],
                     "by_grant": stats.get("by_grant", {})}
    _entra(endpoints, "/reset", "POST")
    return out


async def memory(endpoints: dict[str, Any], concurrency: int, total: int = 10_000) -> dict[str, Any]:
    """Item 6: RSS after 100 events and after `total`, in this process."""
    worker = Worker()
    worker.fresh_services()
    set_graph_latency(endpoints, 0)
    tag = run_id()
    await drive(worker.invoke, (event_text(f"mem-{tag}-{i}") for i in range(100)), concurrency)
    gc.collect()
    samples = [(100, rss_mb())]
    done = 100
    failed = 0
    started = time.perf_counter()
    step = 1000
    while done < total:
        batch = min(step - done % step, total - done)
        _, _, bad = await drive(worker.invoke, (event_text(f"mem-{tag}-{done + i}") for i in range(batch)),
                                concurrency)
        failed += bad
        done += batch
        samples.append((done, rss_mb()))
    gc.collect()
    samples.append((done, rss_mb()))
    return {"samples": samples, "failed": failed, "seconds": time.perf_counter() - started,
            "peak_rss_mb": rss_mb(field_name="VmHWM")}


async def drop_tables() -> None:
    """Delete the idempotency and appointment tables this process's runs made (Azurite keeps them in memory)."""
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"]) as service:
        for table in _TABLES:
            await service.delete_table(table)  # absent (never written) is fine: delete_table ignores it
    _TABLES.clear()


async def e2e(endpoints: dict[str, Any], concurrency: int, latency_ms: float) -> dict[str, Any]:
    """Item 3 through the host: messages enqueued in Azurite, received, invoked, settled and outputs written.

    deliver_webhook runs too (every event's webhook is sent, as on one real instance).
    """
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueServiceClient

    from bench.common import HOST_JSON
    from devstack.harness import LocalHost

    worker = Worker()
    worker.fresh_services()
    conn = os.environ["AzureWebJobsStorage"]
    name = "process_appointment"

    async def run(n: int) -> tuple[float, float]:
        async with QueueServiceClient.from_connection_string(conn) as service:
            inbox = service.get_queue_client("appointments", message_encode_policy=TextBase64EncodePolicy())
            with contextlib.suppress(ResourceExistsError):
                await inbox.create_queue()

            async def send(text: str) -> bool:
                await inbox.send_message(text)
                return True

            _, sent, _ = await drive(send, events(n), 32)
            if sent != n:
                raise RuntimeError(f"only {sent} of {n} events could be enqueued")
        host = LocalHost(worker.module.app, connection_string=conn, host_json=HOST_JSON)
        async with host:
            started, cpu = time.perf_counter(), time.process_time()
            while host.stats[name]["succeeded"] + host.stats[name]["failed"] < n:
                if time.perf_counter() - started > 300:
                    raise TimeoutError(f"{n} events not processed in 300 s: {host.stats[name]}")
                await asyncio.sleep(0.005)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            await host.drain(timeout=120)
        return elapsed, cpu

    set_graph_latency(endpoints, 0)
    await run(concurrency * 2)  # warm: clients, token, tables, queues
    set_graph_latency(endpoints, latency_ms)
    n = concurrency * 20
    seconds, cpu = await run(n)
    set_graph_latency(endpoints, 0)
    return {"events": n, "seconds": seconds, "cpu_seconds": cpu, "concurrency": concurrency,
            "latency_ms": latency_ms}


PHASES: dict[str, Callable[[dict[str, Any], int], Awaitable[dict[str, Any]]]] = {
    "throughput": lambda e, c: throughput(e, c, float(os.environ.get("BENCH_LATENCY_MS", "200"))),
    "e2e": lambda e, c: e2e(e, c, float(os.environ.get("BENCH_LATENCY_MS", "200"))),
    "create": lambda e, c: create(e, c, float(os.environ.get("BENCH_LATENCY_MS", "200"))),
    "tokens": tokens,
    "memory": memory,
}


def main() -> None:
    """`python -m bench.pipeline ENDPOINTS_JSON PHASE`."""
    endpoints = json.loads(Path(sys.argv[1]).read_text())
    phase = sys.argv[2]
    os.environ.update(stack_settings(endpoints))
    handler = worker_logging()
    batch, threshold = queue_concurrency()
    result = asyncio.run(PHASES[phase](endpoints, batch + threshold))
    asyncio.run(drop_tables())
    result["log_records"] = handler.records
    print(json.dumps(result))


if __name__ == "__main__":
    main()
