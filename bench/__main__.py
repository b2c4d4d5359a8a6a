"""`make bench` / `python -m bench`: every performance figure of docs/performance.md, measured in one run.

Prints `name=value` lines as figures are measured, then a table with targets (MISSED where one is not
met). Always exits 0 unless the benchmark itself breaks: it reports, it does not gate (no timed
assertions in `make test`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cold_start, cost, deploy_size, first_result, first_result_calendar, scale
from bench.common import REPO_ROOT, Figure, Report, child_env, local_stack, queue_concurrency

LATENCY_MS = 200.0
# The refresh margin of shared.identity.tokens and of MSAL: a token is renewed this long before it expires.
REFRESH_MARGIN_SECONDS = 300


def machine() -> str:
    """CPU, cores, memory and Python: what the figures came from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:"))
        memory = f"{mem_kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        memory = "unknown RAM"
    return f"{cpu}, {os.cpu_count()} cores, {memory}, Python {platform.python_version()} on {platform.system()}"


def pipeline_phase(endpoints_file: Path, phase: str) -> dict[str, Any]:
    """One phase of bench.pipeline in a fresh worker process."""
    env = child_env()
    env["BENCH_LATENCY_MS"] = str(LATENCY_MS)
    proc = subprocess.run([sys.executable, "-m", "bench.pipeline", str(endpoints_file), phase],  # noqa: S603
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.pipeline {phase} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _check(data: dict[str, Any]) -> None:
    """A run where events failed measures nothing: refuse it."""
    failed = {key: run["failed"] for key, run in data.items() if isinstance(run, dict) and run.get("failed")}
    if failed:
        raise RuntimeError(f"events failed during the run: {failed}")


def throughput_figures(report: Report, data: dict[str, Any]) -> None:
    """Items 3 (in-process) and 4."""
    _check(data)
    concurrency, latency = data["concurrency"], data["latency_ms"] / 1000
    ideal = concurrency / latency
    latency_run = data["latency_run"]
    events_per_second = latency_run["ok"] / latency_run["seconds"]
    report.add(Figure("throughput_efficiency", events_per_second / ideal, ">= 0.9",
                      detail=f"{events_per_second:.1f} events/s in-process (queue function called directly, "
                             f"{concurrency} at a time, Graph latency {data['latency_ms']:.0f} ms, {latency_run['ok']} "
                             "events; excludes the queue round trip)",
                      baseline=f"concurrency / latency = {ideal:.0f} events/s"))
    rounds = data["overhead_rounds"]
    _check({f"{side}[{i}]": run for side, runs in rounds.items() for i, run in enumerate(runs)})

    def rate(run: dict[str, Any]) -> float:
        return float(run["ok"] / run["seconds"])

    pipeline_rates = [rate(run) for run in rounds["pipeline"]]
    pipeline_rate = statistics.median(pipeline_rates)
    raw_rate = statistics.median(rate(run) for run in rounds["raw"])
    wire_rate = statistics.median(rate(run) for run in rounds["raw_app_transport"])
    memory = data["in_memory_idempotency_run"]
    memory_rate = memory["ok"] / memory["seconds"]
    ratios = sorted(rate(raw) / rate(run) for raw, run in zip(rounds["raw"], rounds["pipeline"], strict=True))
    report.add(Figure("overhead_ratio", statistics.median(ratios), "<= 1.7",
                      detail=f"median of {len(ratios)} rounds ({ratios[0]:.2f}-{ratios[-1]:.2f}), each "
                             f"{rounds['pipeline'][0]['events']} events then as many raw calls; pipeline "
                             f"{pipeline_rate:.0f} events/s at zero latency, {concurrency} at a time (median); "
                             f"{data['zero_latency_cpu_ms_per_event']:.1f} ms worker CPU per event; 4 requests "
                             "per event (Graph, 2 idempotency-table writes, the appointment record)",
                      baseline=f"raw httpx {raw_rate:.0f} Graph calls/s (its own transport, HTTP/2 offered), same "
                               "concurrency"))
    report.add(Figure("overhead_ratio_per_request", raw_rate / (4 * pipeline_rate), "info",
                      detail="the same, counting the pipeline's 4 requests per event"))
    raw_cpu = statistics.median(run["cpu_ms_per_call"] for run in rounds["raw"])
    report.add(Figure("overhead_ratio_cpu", data["zero_latency_cpu_ms_per_event"] / raw_cpu, "info",
                      detail=f"diagnostic: this process's CPU per event against per raw call ({raw_cpu:.2f} ms), "
                             "medians; unlike the rates, it leaves out the CPU Azurite and the emulators take from "
                             "the same two cores"))
    report.add(Figure("overhead_ratio_same_transport", wire_rate / pipeline_rate, "info",
                      detail=f"diagnostic: raw httpx over the app's HTTP/1.1 transport, {wire_rate:.0f} calls/s, "
                             "against the pipeline: what msgraph-sdk, the three table writes and the app add "
                             "per event above the wire"))
    report.add(Figure("overhead_ratio_without_table", raw_rate / memory_rate, "info",
                      detail=f"diagnostic: {memory_rate:.0f} events/s with idempotency records in memory; the "
                             "table store's share of the pipeline's cost is "
                             f"{1 - pipeline_rate / memory_rate:.0%}"))
    mem_latency = data["in_memory_idempotency_latency_run"]
    report.add(Figure("throughput_efficiency_without_table", mem_latency["ok"] / mem_latency["seconds"] / ideal,
                      "info", detail="diagnostic: item 3 with idempotency records in memory"))


def e2e_figure(report: Report, data: dict[str, Any]) -> None:
    """Item 3 through Azurite and the host."""
    concurrency, latency = data["concurrency"], data["latency_ms"] / 1000
    batch, _ = queue_concurrency()
    rate = data["events"] / data["seconds"]
    report.add(Figure("throughput_efficiency_e2e", rate / (concurrency / latency), ">= 0.9",
                      detail=f"{rate:.1f} events/s through Azurite and the local host (receive, invoke, outputs, "
                             f"delete; deliver_webhook running too), {data['events']} events; one process, "
                             f"{data['cpu_seconds'] * 1000 / data['events']:.1f} ms CPU per event, "
                             f"{data['cpu_seconds'] / data['seconds']:.0%} of a core",
                      baseline=f"{concurrency / latency:.0f} events/s; the host's own fetch rule caps a uniform-"
                               f"latency load at batchSize/latency = {batch / latency:.0f}"))


def create_figure(report: Report, data: dict[str, Any]) -> None:
    """The create path: two Graph calls per event (createOrGet, then the join URL)."""
    _check(data)
    concurrency, latency = data["concurrency"], data["latency_ms"] / 1000
    ideal = concurrency / (2 * latency)
    run = data["create_run"]
    rate = run["ok"] / run["seconds"]
    report.add(Figure("throughput_efficiency_create", rate / ideal, ">= 0.9",
                      detail=f"{rate:.1f} events/s in-process, events without a meeting (createOrGet then "
                             f"getVirtualAppointmentJoinWebUrl, Graph latency {data['latency_ms']:.0f} ms each; "
                             f"appointment record read, lease and write; {concurrency} at a time; {run['ok']} "
                             f"events; {run['cpu_seconds'] * 1000 / run['events']:.1f} ms CPU per event)",
                      baseline=f"concurrency / (2 x latency) = {ideal:.0f} events/s"))


def token_figures(report: Report, data: dict[str, Any]) -> None:
    """Item 5."""
    _check(data)
    default = data["default_lifetime"]
    report.add(Figure("token_requests_per_1000", default["token_requests"] * 1000 / default["events"], "<= 1",
                      fmt="{:.0f}",
                      detail=f"{default['events']} events of one organizer in {default['seconds']:.1f} s, access "
                             f"tokens living {default['access_token_lifetime']} s; grants {default['by_grant']}"))
    short = data["short_lifetime"]
    usable = short["access_token_lifetime"] - REFRESH_MARGIN_SECONDS
    expected = 1 + math.floor(short["seconds"] / usable)
    report.add(Figure("token_requests_per_lifetime", short["token_requests"] / expected, "<= 1.2",
                      detail=f"{short['token_requests']} token requests for {short['events']} events in "
                             f"{short['seconds']:.1f} s with {short['access_token_lifetime']} s tokens "
                             f"({usable} s usable after the {REFRESH_MARGIN_SECONDS} s refresh margin): "
                             f"{expected} lifetimes; grants {short['by_grant']}"))


def memory_figure(report: Report, data: dict[str, Any]) -> None:
    """Item 6."""
    _check({"memory": data})
    samples = data["samples"]
    first, last = samples[0], samples[-1]
    trend = ", ".join(f"{n}:{rss:.0f}" for n, rss in samples[:: max(1, len(samples) // 6)])
    report.add(Figure("rss_growth", last[1] / first[1], "<= 1.2",
                      detail=f"RSS {first[1]:.0f} MB after {first[0]} events, {last[1]:.0f} MB after {last[0]} "
                             f"({data['seconds']:.0f} s, {data['failed']} failed); events:MB {trend}"))


def host_figure(report: Report, endpoints: dict[str, Any]) -> None:
    """Item 5 of issue 12: the stand-in host's own CPU per message (a do-nothing function with two outputs)."""
    proc = subprocess.run([sys.executable, "-m", "bench.host_overhead",  # noqa: S603 - our own module
                           endpoints["azurite"]["connection_string"], "1000"], env=child_env(), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.host_overhead failed:\n{proc.stderr[-3000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    report.add(Figure("host_cpu_ms_per_message", data["cpu_ms_per_message"], "<= 5",
                      detail=f"{data['messages']} messages through the local host with a function that only sets "
                             f"two outputs: receive, decode, invoke, two output writes, delete; "
                             f"{data['messages'] / data['seconds']:.0f} messages/s, process CPU only",
                      baseline="the same through azure-storage-queue: 6.5 ms (docs/performance.md)"))


def scale_figures(report: Report, runs: list[dict[str, Any]]) -> None:
    """Item 7 of issue 12: events per second with 1, 2 and 3 instances against instances x concurrency / latency."""
    one = runs[0]
    for run in runs:
        cpu = run["cpu_ms_per_event"]
        detail = (f"{run['rate']:.1f} events/s with {run['instances']} instance(s), {run['window_events']:.0f} "
                  f"events between 20 and 80 % of {run['events']}; CPU per event: instances "
                  f"{cpu['instances']:.1f} ms, Azurite {cpu['azurite']:.1f} ms, emulators {cpu['emulators']:.1f} ms; "
                  f"machine {run['machine_busy']:.0%} busy ({os.cpu_count()} cores)")
        name = "scale_efficiency" if run is runs[-1] else f"scale_efficiency_{run['instances']}"
        report.add(Figure(name, run["rate"] / run["ideal"], "report", detail=detail,
                          baseline=f"instances x (batchSize + newBatchThreshold) / latency = {run['ideal']:.0f} "
                                   "events/s"))
    last = runs[-1]
    report.add(Figure("scale_ratio", last["rate"] / (last["instances"] * one["rate"]), "info",
                      detail=f"{last['instances']} instances against {last['instances']} x the one instance's "
                             f"{one['rate']:.1f} events/s measured in the same run"))


def print_table(report: Report) -> None:
    """The summary table."""
    rows = [("figure", "value", "target", "status", "what was measured", "baseline")]
    for f in report.figures:
        met = f.met
        status = "ok" if met else ("MISSED" if met is False else "-")
        value = "n/a" if f.value is None else f.fmt.format(f.value)
        rows.append((f.name, value, f.target, status, f.detail, f.baseline))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for n, row in enumerate(rows):
        head = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4]))
        print(f"{head}  {row[4]}" + (f" [baseline: {row[5]}]" if row[5] else ""))
        if n == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 20)


def guarded(report: Report, name: str, step: Callable[[], None]) -> None:
    """Run one benchmark; a failure becomes an n/a figure and the run goes on."""
    try:
        step()
    except Exception as exc:
        traceback.print_exc()
        report.add(Figure(name, None, "-", detail=f"benchmark failed: {type(exc).__name__}: {exc}"[:300]))


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark (or those named with --only)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", nargs="*", default=None,
                        choices=["cold", "deploy", "first", "throughput", "e2e", "create", "tokens", "memory", "host",
                                 "scale", "cost"])
    args = parser.parse_args(argv)
    wanted = set(args.only or ["cold", "deploy", "first", "throughput", "e2e", "create", "tokens", "memory", "host",
                               "scale", "cost"])
    started = time.monotonic()
    report = Report()
    batch, threshold = queue_concurrency()
    print(f"# machine: {machine()}", flush=True)
    print(f"# host.json: batchSize {batch} + newBatchThreshold {threshold} = {batch + threshold} per instance",
          flush=True)
    if "cold" in wanted:
        guarded(report, "cold_index_ratio", lambda: cold_start.measure(report))
    if "deploy" in wanted:
        guarded(report, "deploy_size_mb", lambda: deploy_size.measure(report))
    if wanted & {"first", "throughput", "e2e", "create", "tokens", "memory", "host", "scale", "cost"}:
        with local_stack() as endpoints, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            endpoints_file = Path(tmp) / "endpoints.json"
            endpoints_file.write_text(json.dumps(endpoints))
            phases: list[tuple[str, str, Callable[[Report, dict[str, Any]], None]]] = [
                ("throughput", "throughput_efficiency", throughput_figures),
                ("e2e", "throughput_efficiency_e2e", e2e_figure),
                ("create", "throughput_efficiency_create", create_figure),
                ("tokens", "token_requests_per_1000", token_figures),
                ("memory", "rss_growth", memory_figure),
            ]
            if "first" in wanted:
                guarded(report, "first_result_ratio", lambda: first_result.measure(report, endpoints))
                guarded(report, "first_result_ratio_create",
                        lambda: first_result.measure_create(report, endpoints))
                guarded(report, "first_result_ratio_calendar",
                        lambda: first_result_calendar.measure(report, endpoints))
            for phase, figure, render in phases:
                if phase in wanted:
                    guarded(report, figure,
                            lambda phase=phase, render=render: render(report, pipeline_phase(endpoints_file, phase)))
            if "host" in wanted:
                guarded(report, "host_cpu_ms_per_message", lambda: host_figure(report, endpoints))
            if "scale" in wanted:
                guarded(report, "scale_efficiency",
                        lambda: scale_figures(report, scale.measure(endpoints, LATENCY_MS)))
            if "cost" in wanted:
                guarded(report, "cost_per_10k_usd", lambda: cost.measure(report, endpoints))
    print_table(report)
    print(f"\n# bench finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
