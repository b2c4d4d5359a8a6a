"""Cold start: Azure's Python worker initialised with the app (it imports and indexes function_app.py, then
answers the host's metadata and load requests), against importing the SDKs a naive app imports at top level."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Figure, Report, child_env, median, run_child, sample_settings

RUNS = 7
# What a naive app imports at module level: the Functions library, Entra, Storage queues, Graph.
BASELINE_IMPORTS = "azure.functions, azure.identity, azure.storage.queue, msgraph"
# Heavy modules the first invocation does not need to be loaded by indexing.
DEFERRED = ("msgraph", "kiota_http", "azure.identity", "msal", "httpx", "azure.data.tables", "azure.storage.queue",
            "azure.storage.blob", "requests", "aiohttp", "jwt", "cryptography")

_PEAK = """
def _peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
"""

APP_CHILD = _PEAK + """
import asyncio, json, sys, time
t0 = time.perf_counter()
from devstack.harness.worker import Worker
functions = asyncio.run(Worker.for_script("function_app.py")).functions
elapsed = time.perf_counter() - t0
loaded = [m for m in {deferred!r} if m in sys.modules]
print(json.dumps({{"seconds": elapsed, "peak_rss_mb": _peak(), "functions": len(functions), "loaded": loaded}}))
"""

BASELINE_CHILD = _PEAK + """
import json, time
t0 = time.perf_counter()
import {imports}
elapsed = time.perf_counter() - t0
print(json.dumps({{"seconds": elapsed, "peak_rss_mb": _peak()}}))
"""


def _timed(code: str, env: dict[str, str]) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    result = run_child(code, env)
    return result, time.perf_counter() - started


def measure(report: Report) -> None:
    """Fresh processes, bytecode cache warm on both sides, interleaved runs, medians."""
    from devstack.certs import ensure_certs

    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        env = child_env(sample_settings(ensure_certs(Path(tmp)).ca_pem))
        app_code = APP_CHILD.format(deferred=DEFERRED)
        base_code = BASELINE_CHILD.format(imports=BASELINE_IMPORTS)
        # Warm-up: writes __pycache__ for both, so neither side pays for compiling.
        first_app, _ = _timed(app_code, env)
        _timed(base_code, env)
        app: list[tuple[dict[str, float], float]] = []
        base: list[tuple[dict[str, float], float]] = []
        for _ in range(RUNS):
            app.append(_timed(app_code, env))
            base.append(_timed(base_code, env))
    app_s = median([r["seconds"] for r, _ in app])
    base_s = median([r["seconds"] for r, _ in base])
    app_wall = median([w for _, w in app])
    base_wall = median([w for _, w in base])
    app_peak = median([r["peak_rss_mb"] for r, _ in app])
    base_peak = median([r["peak_rss_mb"] for r, _ in base])
    report.add(Figure("cold_index_ratio", app_s / base_s, "<= 0.6",
                      detail=f"worker init (import + index) and metadata, {first_app['functions']} functions: "
                             f"{app_s * 1000:.0f} ms "
                             f"(process wall {app_wall * 1000:.0f} ms), median of {RUNS} fresh processes",
                      baseline=f"import {BASELINE_IMPORTS}: {base_s * 1000:.0f} ms "
                               f"(process wall {base_wall * 1000:.0f} ms)"))
    report.add(Figure("cold_peak_rss_mb", app_peak, "info", fmt="{:.1f}",
                      detail="peak RSS (VmHWM) after worker init", baseline=f"{base_peak:.1f} MB"))
    report.add(Figure("cold_baseline_peak_rss_mb", base_peak, "info", fmt="{:.1f}",
                      detail=f"peak RSS after import {BASELINE_IMPORTS}"))
    report.add(Figure("cold_wall_ratio", app_wall / base_wall, "info",
                      detail="the same two, timed from process start to exit (interpreter start-up included)"))
    loaded = first_app["loaded"]
    report.note("cold start: heavy modules loaded by indexing: " + (", ".join(loaded) if loaded else "none of "
                + ", ".join(DEFERRED)))
