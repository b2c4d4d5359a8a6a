"""What 10,000 appointments cost on Flex Consumption, and how many Graph calls each one makes: an ESTIMATE.

Measured here, in a fresh process running the real functions through the local host against the local stack
(Graph emulator with a fixed latency): CPU seconds, the functions' own execution time (the duration_ms the app
logs for each appointment and each webhook delivery), peak memory, executions (invocations of every function)
and Graph requests, per appointment, on four paths: a given meeting, a meeting the app creates, a reschedule,
a cancellation. Not measured: Azure itself. The price is Microsoft's published list price below; the bill is
modelled, not read from an invoice.

Flex Consumption on-demand billing (Microsoft Learn, "Estimating consumption-based costs", Flex tab): the
instance memory size provisioned (instanceMemoryMB, not the memory used) times the time an instance is actively
executing functions, in GB-seconds, plus a charge per execution. Executions that overlap on one instance are
billed once for that time, so the two bounds printed are:
    loaded  - instances kept busy (a queue backlog): active time per appointment = its CPU time (1 vCPU at 2048 MB);
    sparse  - each appointment alone on its instance: active time = the sum of its executions' durations.
Free grants (100,000 GB-s and 250,000 executions per subscription per month, on demand) are NOT subtracted.
Storage transactions, Application Insights ingestion and bandwidth are billed apart and not included.
"""

from __future__ import annotations

import json
from typing import Any

from bench.common import Figure, Report, child_env, run_child, set_graph_latency, stack_settings

# Microsoft's published Flex Consumption list prices, on-demand, pay-as-you-go, USD, region East US
# (https://azure.microsoft.com/pricing/details/functions/), as read on 2026-12-06 through a secondary copy of that
# page dated 2025-05-22 (the pricing page itself cannot be reached from this machine). Check before quoting.
PRICE_REGION = "East US"
PRICE_DATE = "2025-05-22 (list price; re-check on the pricing page)"
PRICE_PER_GB_SECOND = 0.000026
PRICE_PER_MILLION_EXECUTIONS = 0.40
INSTANCE_MEMORY_MB = 2048  # infra/main.bicep instanceMemoryMB default
SMALLEST_INSTANCE_MB = 512
APPOINTMENTS = 10_000
GRAPH_LATENCY_MS = 200.0  # per Graph request, as the throughput figures assume
PER_PATH = 60

CHILD = r'''
import asyncio, json, logging, os, resource, time

import function_app
from devstack.harness import LocalHost
from bench.common import HOST_JSON, admin

GRAPH_ADMIN, CA = os.environ["BENCH_GRAPH_ADMIN"], os.environ["TLS_CA_BUNDLE"]
N = int(os.environ["BENCH_PER_PATH"])
SCHEDULER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
MEETING = os.environ["BENCH_MEETING_ID"]
T1 = ("2026-12-01T09:00:00Z", "2026-12-01T09:30:00Z")
T2 = ("2026-12-02T14:00:00Z", "2026-12-02T14:45:00Z")


class Durations(logging.Handler):
    """The execution time the app itself logs: one line per appointment, one per webhook delivery attempt."""
    def __init__(self):
        super().__init__()
        self.ms = 0.0
    def emit(self, record):
        if getattr(record, "stage", None) in ("appointment", "webhook"):
            self.ms += float(getattr(record, "duration_ms", 0) or 0)


def event(kind, apt, seq=None, times=None, meeting=None):
    doc = {"id": f"{apt}-{kind}-{seq}", "type": f"appointment.{kind}", "appointmentId": apt, "organizer": SCHEDULER}
    if seq is not None:
        doc["sequence"] = seq
    if times:
        doc["startDateTime"], doc["endDateTime"] = times
    if meeting:
        doc["onlineMeetingId"] = meeting
    return json.dumps(doc)


async def main():
    from azure.storage.queue import TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueServiceClient

    durations = Durations()
    for name in ("shared.pipeline.processor", "shared.webhooks.sender"):
        logging.getLogger(name).addHandler(durations)
        logging.getLogger(name).setLevel(logging.INFO)
    conn = os.environ["AzureWebJobsStorage"]
    tag = os.urandom(4).hex()
    paths = {
        "given": [event("created", f"given-{tag}-{i}", meeting=MEETING) for i in range(N)],
        "created": [event("created", f"life-{tag}-{i}", 1, T1) for i in range(N)],
        "reschedule": [event("rescheduled", f"life-{tag}-{i}", 2, T2) for i in range(N)],
        "cancel": [event("cancelled", f"life-{tag}-{i}", 3) for i in range(N)],
    }
    out = {}
    async with QueueServiceClient.from_connection_string(conn) as service:
        inbox = service.get_queue_client("appointments", message_encode_policy=TextBase64EncodePolicy())
        try:
            await inbox.create_queue()
        except Exception:
            pass
        async with LocalHost(function_app.app, connection_string=conn, host_json=HOST_JSON) as host:
            for warm in [event("created", f"warm-{tag}", meeting=MEETING)]:
                await inbox.send_message(warm)
            await host.drain(timeout=120)
            for path, texts in paths.items():
                invoked = sum(s["invoked"] for s in host.stats.values())
                graph = admin(GRAPH_ADMIN + "/stats", CA)["requests"]
                durations.ms = 0.0
                cpu, wall = time.process_time(), time.perf_counter()
                for text in texts:
                    await inbox.send_message(text)
                await host.drain(timeout=600)
                failed = sum(s["failed"] for s in host.stats.values())
                out[path] = {"cpu_s": (time.process_time() - cpu) / N, "wall_s": time.perf_counter() - wall,
                             "execution_s": durations.ms / 1000 / N,
                             "executions": (sum(s["invoked"] for s in host.stats.values()) - invoked) / N,
                             "graph_calls": (admin(GRAPH_ADMIN + "/stats", CA)["requests"] - graph) / N,
                             "failed": failed}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


asyncio.run(main())
'''


def cost_per(appointments: int, *, active_seconds: float, executions: float, memory_mb: int) -> float:
    """USD for `appointments` at the list price: memory provisioned x active seconds, plus executions."""
    gb_seconds = appointments * active_seconds * memory_mb / 1024
    return gb_seconds * PRICE_PER_GB_SECOND + appointments * executions * PRICE_PER_MILLION_EXECUTIONS / 1e6


def _instance_fitting(peak_rss_mb: float) -> int:
    """The smallest Flex instance size (512, 2048, 4096 MB) that holds the measured peak with a 25 % margin."""
    for size in (SMALLEST_INSTANCE_MB, 2048, 4096):
        if peak_rss_mb * 1.25 <= size:
            return size
    return 4096


def measure(report: Report, endpoints: dict[str, Any]) -> dict[str, Any]:
    """Run the four paths in a fresh process; report the cost per 10,000 appointments and Graph calls per path."""
    from bench.common import MEETING_ID

    set_graph_latency(endpoints, GRAPH_LATENCY_MS)
    try:
        env = child_env({**stack_settings(endpoints), "MEETING_MANAGEMENT": "true", "CLIENT_SMS": "false",
                         "BENCH_GRAPH_ADMIN": endpoints["graph"]["admin_url"], "BENCH_PER_PATH": str(PER_PATH),
                         "BENCH_MEETING_ID": MEETING_ID})
        measured = run_child(CHILD, env, timeout=1800)
    finally:
        set_graph_latency(endpoints, 0)
    bad = {path: m["failed"] for path, m in measured.items() if isinstance(m, dict) and m.get("failed")}
    if bad:
        raise RuntimeError(f"failed invocations in the cost run (nothing is measured from a failing run): {bad}")
    given = measured["given"]
    fitted = _instance_fitting(measured["peak_rss_mb"])
    price = (f"list price {PRICE_REGION}, {PRICE_DATE}: ${PRICE_PER_GB_SECOND}/GB-s, "
             f"${PRICE_PER_MILLION_EXECUTIONS}/million executions; no free grant")
    inputs = (f"per appointment (given meeting): CPU {given['cpu_s'] * 1000:.1f} ms, execution time "
              f"{given['execution_s'] * 1000:.0f} ms at {GRAPH_LATENCY_MS:.0f} ms Graph latency, "
              f"{given['executions']:.2f} executions, peak RSS {measured['peak_rss_mb']:.0f} MB")
    sparse = cost_per(APPOINTMENTS, active_seconds=given["execution_s"], executions=given["executions"],
                      memory_mb=INSTANCE_MEMORY_MB)
    loaded = cost_per(APPOINTMENTS, active_seconds=given["cpu_s"], executions=given["executions"],
                      memory_mb=INSTANCE_MEMORY_MB)
    report.add(Figure("cost_per_10k_usd", sparse, "report", fmt="{:.4f}",
                      detail=f"ESTIMATE, sparse traffic (each appointment alone on a {INSTANCE_MEMORY_MB} MB "
                             f"instance); {inputs}; {price}"))
    report.add(Figure("cost_per_10k_usd_loaded", loaded, "report", fmt="{:.4f}",
                      detail=f"ESTIMATE, busy instances (active time = CPU time, 1 vCPU at "
                             f"{INSTANCE_MEMORY_MB} MB); same inputs"))
    if fitted < INSTANCE_MEMORY_MB:
        report.note(f"cost: the measured peak RSS fits a {fitted} MB instance; there the sparse estimate is "
                    f"${cost_per(APPOINTMENTS, active_seconds=given['execution_s'], executions=given['executions'], memory_mb=fitted):.4f}"  # noqa: E501
                    " per 10,000 (a smaller instance has less CPU: the loaded bound would grow)")
    # Not modelled: a minimum billed duration per execution. Were each execution billed at least one second (a
    # rule discussed for Flex on Microsoft Q&A, not on the pricing page), the sparse bound would be this:
    floor = cost_per(APPOINTMENTS, active_seconds=given["executions"] * max(1.0, given["execution_s"]),
                     executions=given["executions"], memory_mb=INSTANCE_MEMORY_MB)
    report.note(f"cost: with a 1 s minimum per execution (not modelled above) the sparse estimate would be "
                f"${floor:.2f} per 10,000 at {INSTANCE_MEMORY_MB} MB")
    for path in ("given", "created", "reschedule", "cancel"):
        m = measured[path]
        report.add(Figure(f"graph_calls_{path}", m["graph_calls"], "report", fmt="{:.2f}",
                          detail=f"Graph requests per appointment ({m['executions']:.2f} executions, CPU "
                                 f"{m['cpu_s'] * 1000:.1f} ms, execution time {m['execution_s'] * 1000:.0f} ms)"))
    report.note("cost: " + json.dumps({k: v for k, v in measured.items()}, sort_keys=True))
    return measured
