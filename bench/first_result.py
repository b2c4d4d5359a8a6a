"""Item 2: from process start to the first join URL of one enqueued event, against a raw-SDK baseline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import (
    HOST_JSON,
    MEETING_ID,
    ORGANIZER,
    REPO_ROOT,
    Figure,
    Report,
    child_env,
    create_event_text,
    event_text,
    median,
    run_id,
    set_graph_latency,
    stack_settings,
)

RUNS = 5
POLL_SECONDS = 0.005
GRAPH = "https://graph.microsoft.com/"

# The worker: import the app, index it, run the host until the first invocation has settled.
APP_CHILD = f"""
import asyncio, os
import function_app
from devstack.harness import LocalHost

async def main():
    host = LocalHost(function_app.app, connection_string=os.environ["AzureWebJobsStorage"],
                     host_json={str(HOST_JSON)!r})
    async with host:
        while not host.stats["process_appointment"]["succeeded"]:
            await asyncio.sleep(0.01)
    os._exit(0)

asyncio.run(main())
"""

# The baseline: the same SDKs imported at top level, then one bare httpx call to the Graph emulator.
BASELINE_CHILD = """
import os, ssl
import azure.functions, azure.identity, azure.storage.queue, msgraph
import httpx
context = ssl.create_default_context()
context.load_verify_locations(cafile=os.environ["TLS_CA_BUNDLE"])
response = httpx.get(os.environ["BENCH_URL"], headers={"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]},
                     verify=context)
assert response.status_code == 200, response.status_code
"""


# The create path's baseline: the same imports, then the same two raw calls the app makes for an appointment
# without a meeting (createOrGet as the organizer, then the new meeting's join URL).
CREATE_BASELINE_CHILD = """
import os, ssl, uuid
import azure.functions, azure.identity, azure.storage.queue, msgraph
import httpx
context = ssl.create_default_context()
context.load_verify_locations(cafile=os.environ["TLS_CA_BUNDLE"])
base = os.environ["GRAPH_BASE_URL"]
with httpx.Client(verify=context) as client:
    made = client.post(base + "/me/onlineMeetings/createOrGet",
                       headers={"Authorization": "Bearer " + os.environ["BENCH_WRITE_TOKEN"]},
                       json={"externalId": uuid.uuid4().hex, "subject": "Bench",
                             "startDateTime": "2026-12-01T09:00:00Z", "endDateTime": "2026-12-01T09:30:00Z"})
    assert made.status_code == 201, made.status_code
    url = base + "/users/" + os.environ["BENCH_ORGANIZER"] + "/onlineMeetings/" + made.json()["id"] \
        + "/getVirtualAppointmentJoinWebUrl()"
    answer = client.get(url, headers={"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]})
    assert answer.status_code == 200, answer.status_code
"""


def _spawn(code: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _app_run(env: dict[str, str], queues: Any, text: str | None = None) -> float:
    """Seconds from spawning the worker to the join URL being on `join-urls`."""
    for name in ("appointments", "join-urls", "webhook-outbox", "appointments-rejected"):
        queues[name].clear_messages()
    queues["appointments"].send_message(text or event_text(f"first-{run_id()}"))
    started = time.perf_counter()
    proc = _spawn(APP_CHILD, env)
    try:
        while not queues["join-urls"].peek_messages(max_messages=1):
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited first:\n{proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
            if time.perf_counter() - started > 60:
                raise TimeoutError("no join URL within 60 s")
            time.sleep(POLL_SECONDS)
        return time.perf_counter() - started
    finally:
        proc.wait(timeout=30)


def _baseline_run(env: dict[str, str], code: str = BASELINE_CHILD) -> float:
    started = time.perf_counter()
    proc = _spawn(code, env)
    _, err = proc.communicate(timeout=60)
    if proc.returncode:
        raise RuntimeError(f"baseline failed:\n{err.decode()[-3000:]}")
    return time.perf_counter() - started


def _interleaved(endpoints: dict[str, Any], app_text: Callable[[], str], baseline_code: str,
                 baseline_env: Callable[[dict[str, str], Any], dict[str, str]]) -> tuple[list[float], list[float]]:
    """Interleaved fresh processes, both warmed once (bytecode cache): (app seconds, baseline seconds)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    from shared.services import build_acquirer
    from shared.settings import load_settings

    settings = stack_settings(endpoints)
    env = child_env(settings)
    set_graph_latency(endpoints, 0)
    conn = settings["AzureWebJobsStorage"]
    queues = {name: QueueClient.from_connection_string(conn, name, message_encode_policy=TextBase64EncodePolicy())
              for name in ("appointments", "join-urls", "webhook-outbox", "appointments-rejected")}
    for queue in queues.values():
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
    # The app's managed identity (its credential toward Entra) is found through the platform's environment.
    os.environ.update({k: settings[k] for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER") if k in settings})
    base_env = baseline_env(env, build_acquirer(load_settings(settings)))
    _app_run(env, queues, app_text())  # warm-up: bytecode caches, the tables, the queues
    _baseline_run(base_env, baseline_code)
    app: list[float] = []
    base: list[float] = []
    for _ in range(RUNS):
        app.append(_app_run(env, queues, app_text()))
        base.append(_baseline_run(base_env, baseline_code))
    for queue in queues.values():
        queue.close()
    return app, base


def measure(report: Report, endpoints: dict[str, Any]) -> None:
    """An event with its meeting: one Graph call, against the SDK imports and one raw call."""
    def baseline_env(env: dict[str, str], acquirer: Any) -> dict[str, str]:
        token = acquirer.acquire(acquirer.identify(ORGANIZER, None), [GRAPH + "VirtualAppointment.Read"])
        return {**env, "BENCH_TOKEN": token.token,
                "BENCH_URL": f"{env['GRAPH_BASE_URL']}/users/{ORGANIZER}/onlineMeetings/{MEETING_ID}"
                             "/getVirtualAppointmentJoinWebUrl()"}

    app, base = _interleaved(endpoints, lambda: event_text(f"first-{run_id()}"), BASELINE_CHILD, baseline_env)
    app_s, base_s = median(app), median(base)
    report.add(Figure("first_result_ratio", app_s / base_s, "<= 1.3",
                      detail=f"process start -> join URL on join-urls: {app_s * 1000:.0f} ms (median of {RUNS}; "
                             f"range {min(app) * 1000:.0f}-{max(app) * 1000:.0f})",
                      baseline=f"SDK imports + one raw httpx call: {base_s * 1000:.0f} ms"))


def measure_create(report: Report, endpoints: dict[str, Any]) -> None:
    """An appointment without a meeting: the app's two Graph calls against the same two raw calls."""
    def baseline_env(env: dict[str, str], acquirer: Any) -> dict[str, str]:
        identity = acquirer.identify(ORGANIZER, None)
        return {**env, "BENCH_ORGANIZER": ORGANIZER,
                "BENCH_TOKEN": acquirer.acquire(identity, [GRAPH + "VirtualAppointment.Read"]).token,
                "BENCH_WRITE_TOKEN": acquirer.acquire(identity, [GRAPH + "OnlineMeetings.ReadWrite"]).token}

    app, base = _interleaved(endpoints, lambda: create_event_text(f"first-create-{run_id()}"),
                             CREATE_BASELINE_CHILD, baseline_env)
    app_s, base_s = median(app), median(base)
    report.add(Figure("first_result_ratio_create", app_s / base_s, "<= 1.3",
                      detail=f"process start -> both links on join-urls for an appointment without a meeting: "
                             f"{app_s * 1000:.0f} ms (median of {RUNS}; range {min(app) * 1000:.0f}-"
                             f"{max(app) * 1000:.0f})",
                      baseline=f"SDK imports + raw createOrGet + raw join-URL call: {base_s * 1000:.0f} ms"))
