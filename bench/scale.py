"""`scale_efficiency`: events per second through the queues with 1, 2 and 3 instances at 200 ms Graph latency.

Each instance is a harness process (`python -m devstack.harness`, as in a chaos run) on the stack's one
storage account, running the app with the repo's host.json, deliver_webhook included. For each instance
count the instances start, a feeder keeps about BACKLOG events waiting on `appointments` until N have been
sent, and the rate is taken between 20 % and 80 % of the results arriving on `join-urls` (after start-up
and warm-up, before the tail), against the ideal
instances x (batchSize + newBatchThreshold) / latency. Beside it: the CPU per event of the instances, of
Azurite and of the emulators over the same window, and how busy the machine's cores were, which is what
limits it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, child_env, event_text, queue_concurrency, run_id, set_graph_latency, stack_settings

EVENTS_PER_INSTANCE = 1000
WINDOW = (0.2, 0.8)
# Azurite's receive costs CPU in proportion to the queue's depth (5 ms of its CPU per receive at 100
# messages, 39 ms at 3,000; Azure's does not): the feeder keeps the backlog near this many messages, the same
# for every instance count, so the instances are measured and not the depth.
BACKLOG = 150
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


async def _measure_window(conn: str, n: int, pids: dict[str, list[int]]) -> dict[str, Any]:
    """Feed `n` events, keeping the backlog near BACKLOG, and mark CPU and time at 20 % and 80 % of the results."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueServiceClient

    tag = run_id()
    marks: dict[str, tuple[float, float, dict[str, float], tuple[float, float]]] = {}
    async with QueueServiceClient.from_connection_string(conn) as service:
        for name in ("appointments", "join-urls"):
            with contextlib.suppress(ResourceExistsError):
                await service.get_queue_client(name).create_queue()
        await service.get_queue_client("join-urls").clear_messages()
        inbox = service.get_queue_client("appointments", message_encode_policy=TextBase64EncodePolicy())
        results = service.get_queue_client("join-urls")
        sent = 0
        deadline = time.monotonic() + 600
        while len(marks) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} events not done in 600 s")
            backlog = (await inbox.get_queue_properties()).approximate_message_count or 0
            top_up = min(BACKLOG - backlog, n - sent)
            if top_up > 0:
                await asyncio.gather(*(inbox.send_message(event_text(f"scale-{tag}-{sent + i}"))
                                       for i in range(top_up)))
                sent += top_up
            done = (await results.get_queue_properties()).approximate_message_count or 0
            for name, share in zip(("start", "end"), WINDOW, strict=True):
                if name not in marks and done >= share * n:
                    cpu = {kind: sum(cpu_seconds(pid) for pid in group) for kind, group in pids.items()}
                    marks[name] = (time.monotonic(), float(done), cpu, machine_busy())
            await asyncio.sleep(0.1)
    (t0, d0, c0, m0), (t1, d1, c1, m1) = marks["start"], marks["end"]
    events = d1 - d0
    return {"window_events": events, "seconds": t1 - t0, "rate": events / (t1 - t0),
            "cpu_ms_per_event": {k: (c1[k] - c0[k]) * 1000 / events for k in c0},
            "machine_busy": (m1[0] - m0[0]) / (m1[1] - m0[1])}


def measure_instances(endpoints: dict[str, Any], instances: int, latency_ms: float) -> dict[str, Any]:
    """One instance count: rate and CPU per event over the 20-80 % window."""
    n = EVENTS_PER_INSTANCE * instances
    # A new idempotency table for each count: Azurite's table costs more per write as it fills.
    env = child_env({**stack_settings(endpoints), "IDEMPOTENCY_TABLE": f"scale{run_id()}"})
    procs = [subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "devstack.harness", "--state-dir", endpoints["state_dir"], "--http-port", "-1",
         "--log-level", "WARNING"], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True) for _ in range(instances)]
    pids = {"instances": [p.pid for p in procs], "azurite": [endpoints["pids"]["azurite"]],
            "emulators": [endpoints["pids"]["emulators"]]}
    try:
        result = asyncio.run(_measure_window(endpoints["azurite"]["connection_string"], n, pids))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    batch, threshold = queue_concurrency()
    ideal = instances * (batch + threshold) / (latency_ms / 1000)
    return {"instances": instances, "events": n, "ideal": ideal, **result}


def measure(endpoints: dict[str, Any], latency_ms: float) -> list[dict[str, Any]]:
    """1, 2 and 3 instances, one after the other, on one stack."""
    set_graph_latency(endpoints, latency_ms)
    try:
        return [measure_instances(endpoints, instances, latency_ms) for instances in (1, 2, 3)]
    finally:
        set_graph_latency(endpoints, 0)
