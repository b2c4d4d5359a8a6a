"""Telemetry leaves the process as Application Insights envelopes: custom dimensions kept, no duplicates.

The real azure-monitor-opentelemetry exporter posts to a local ingestion endpoint; a fresh interpreter
keeps OpenTelemetry's global providers out of the test process.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.functional
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = r'''
import logging, os
from opentelemetry._logs import get_logger_provider
from opentelemetry.metrics import get_meter_provider
from shared import telemetry

assert telemetry.configure(os.environ)
logging.getLogger("shared.pipeline.processor").warning(
    "appointment %s: outcome=%s", "apt-1", "rejected",
    extra={"event_id": "evt-1", "appointment_id": "apt-1", "organizer_hash": "0123456789abcdef",
           "outcome": "rejected", "reason": "forbidden", "graph_status": 403, "duration_ms": 12.5,
           "dequeue_count": 1})
logging.getLogger("azure.core.pipeline").warning("a third-party line")
telemetry.record_gauge("queue_depth", 3, {"queue": "appointments-poison"})
get_logger_provider().force_flush()
get_meter_provider().force_flush()
'''


@pytest.fixture
def ingestion() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for the Application Insights ingestion endpoint, recording every envelope."""
    envelopes: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            envelopes.extend(json.loads(body))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"itemsReceived": 1, "itemsAccepted": 1, "errors": []}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", envelopes
    finally:
        server.shutdown()


def test_logs_keep_custom_dimensions_once_and_metrics_arrive(ingestion):
    endpoint, envelopes = ingestion
    # GIVEN a connection string WHEN the app logs an outcome and records a queue depth
    env = {**os.environ, "PYTHONPATH": str(ROOT), "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
           "APPLICATIONINSIGHTS_CONNECTION_STRING":
               f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint={endpoint}"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    messages = [e["data"]["baseData"] for e in envelopes if e["name"].endswith(".Message")]
    # THEN the outcome arrives exactly once, with every dimension the workbook and alerts query
    ours = [m for m in messages if m["message"] == "appointment apt-1: outcome=rejected"]
    assert len(ours) == 1
    properties = ours[0]["properties"]
    for key in ("event_id", "appointment_id", "organizer_hash", "outcome", "reason", "graph_status",
                "duration_ms", "dequeue_count"):
        assert key in properties, key
    assert properties["reason"] == "forbidden" and properties["outcome"] == "rejected"
    # AND third-party loggers are not exported (the host records its own)
    assert not [m for m in messages if m["message"] == "a third-party line"]
    # AND the queue depth is a custom metric with its queue as a dimension
    metrics = [(metric, e["data"]["baseData"].get("properties", {})) for e in envelopes
               if e["name"].endswith(".Metric") for metric in e["data"]["baseData"]["metrics"]]
    depth = [(m, p) for m, p in metrics if m["name"] == "queue_depth"]
    assert depth and depth[0][0]["value"] == 3 and depth[0][1]["queue"] == "appointments-poison"


# --------------------------------------------------------------------------------------------------------------
# Real invocations through the real exporter, checked against every query the alerts, workbook and docs run.

REAL_RUN = r'''
import asyncio, json, os
import httpx
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient
from opentelemetry._logs import get_logger_provider

import function_app
from devstack.harness import LocalHost
from shared import queues, telemetry
from shared.settings import StorageConnection
from shared.storage.queue_metrics import report_queue_depths

SCHEDULER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="
DERMATOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19kZXJtYXRvbG9neUB0aHJlYWQudjI="
PHYSIO = "MSo4ZTJmM2E0Yi01YzZkLTRlN2YtOWEwYi0xYzJkM2U0ZjVhNmIqMCoqMTk6bWVldGluZ19waHlzaW9AdGhyZWFkLnYy"
UNREADABLE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + "A" * 88
              + ";QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;")


def event(event_id, meeting, organizer=SCHEDULER):
    doc = {"id": event_id, "type": "appointment.created", "appointmentId": "apt-" + event_id,
           "onlineMeetingId": meeting}
    if organizer:
        doc["organizer"] = organizer
    return json.dumps(doc)


async def main():
    conn = os.environ["AzureWebJobsStorage"]
    with httpx.Client(base_url=os.environ["GRAPH_ADMIN_URL"] + "/", verify=os.environ["TLS_CA_BUNDLE"]) as admin:
        # The throttled call, then a transient failure, then success: all on one event's meeting.
        admin.put("faults", json={"rules": [{"meeting_id": DERMATOLOGY, "status": 429, "retry_after": 1, "times": 1},
                                            {"meeting_id": DERMATOLOGY, "status": 503, "times": 1}]})
    with httpx.Client(base_url=os.environ["RECEIVER_ADMIN_URL"] + "/", verify=os.environ["TLS_CA_BUNDLE"]) as admin:
        admin.put("fail", json={"status": 429, "times": 1})  # a webhook receiver's 429, not Graph's
    host_json = json.load(open("host.json"))
    host_json["extensions"]["queues"]["visibilityTimeout"] = "00:00:00"
    async with QueueServiceClient.from_connection_string(conn) as service:
        inbox = service.get_queue_client(queues.APPOINTMENTS, message_encode_policy=TextBase64EncodePolicy())
        try:
            await inbox.create_queue()
        except Exception:
            pass
        async with LocalHost(function_app.app, connection_string=conn, host_json=host_json, http_port=0) as host:
            for body in (event("ok", CARDIOLOGY), event("thr", DERMATOLOGY), event("forbidden", PHYSIO),
                         event("no-organizer", CARDIOLOGY, organizer=None),
                         event("unknown", CARDIOLOGY, organizer="nobody@contoso.test")):
                await inbox.send_message(body)
            await host.drain(timeout=90)
    await report_queue_depths(StorageConnection(connection_string=conn))        # every queue read
    await report_queue_depths(StorageConnection(connection_string=UNREADABLE))  # none can be read
    telemetry.flush_metrics()
    get_logger_provider().force_flush()


asyncio.run(main())
'''


def _bicep_queries() -> list[tuple[str, str]]:
    text = (ROOT / "infra" / "app" / "alerts.bicep").read_text()
    found = re.findall(r"(?:var (\w+Query) = |query: )(?:format\()?'((?:[^'\\]|\\.)*)'", text)
    return [(f"alerts.bicep {name or 'parkedRules'}", query.replace("\\'", "'")) for name, query in found]


def _workbook_queries() -> list[tuple[str, str]]:
    workbook = json.loads((ROOT / "infra" / "app" / "workbook.json").read_text())
    return [(f"workbook {item['content'].get('title')}", item["content"]["query"])
            for item in workbook["items"] if item["type"] == 3]


def _docs_queries() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "deploy.md").read_text()
    queries = []
    for block in re.findall(r"```kusto\n(.*?)```", text, re.S):
        for chunk in re.split(r"\n(?=// )", block.strip()):
            title, _, query = chunk.partition("\n")
            queries.append((f"docs/deploy.md {title}", query))
    return queries


def all_queries() -> list[tuple[str, str]]:
    """Every KQL query an operator is given: the alerts, the workbook tiles, the docs."""
    return _bicep_queries() + _workbook_queries() + _docs_queries()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """The app's real functions on a stack of their own, exporting to a local ingestion stand-in."""
    from devstack.stack import start_stack, stop_stack

    envelopes: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            envelopes.extend(json.loads(body))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"itemsReceived": 1, "itemsAccepted": 1, "errors": []}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state_dir = tmp_path_factory.mktemp("telemetry-devstack")
    stack = start_stack(state_dir, "auto")
    try:
        env = {**os.environ, **stack["settings"], "CREDENTIAL_MODE": "dev_password", "PYTHONPATH": str(ROOT),
               "GRAPH_ADMIN_URL": stack["graph"]["admin_url"], "RECEIVER_ADMIN_URL": stack["receiver"]["admin_url"],
               "WEBHOOK_RETRY_BASE_SECONDS": "1", "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
               "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000001;"
               f"IngestionEndpoint=http://127.0.0.1:{server.server_address[1]}/"}
        done = subprocess.run([sys.executable, "-c", REAL_RUN], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=240, check=False)
        assert done.returncode == 0, done.stderr[-4000:]
        yield envelopes
    finally:
        stop_stack(state_dir)
        server.shutdown()


def _traces(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"]["baseData"].get("properties", {}) | {"message": e["data"]["baseData"]["message"]}
            for e in envelopes if e["name"].endswith(".Message")]


def _metrics(envelopes: list[dict[str, Any]]) -> list[tuple[str, float, dict[str, Any]]]:
    return [(m["name"], m["value"], e["data"]["baseData"].get("properties", {})) for e in envelopes
            if e["name"].endswith(".Metric") for m in e["data"]["baseData"]["metrics"]]


@pytest.mark.e2e
def test_real_invocations_give_graph_statuses_once_each_and_on_the_outcome_line(real_run):
    traces = _traces(real_run)
    graph = [t for t in traces if t.get("stage") == "graph"]
    statuses = sorted(t.get("graph_status") for t in graph)
    # THEN every Graph answer has its line: the success (2xx), the 429, the 503 and the 403
    assert statuses.count("429") == 1, statuses  # the throttling alert counts it once
    assert "503" in statuses and "403" in statuses and statuses.count("2xx") >= 2, statuses
    # AND the outcome lines carry the status of the answer behind them
    outcomes = {t.get("event_id"): t for t in traces if t.get("stage") == "appointment" and t["outcome"] != "failed"}
    assert outcomes["forbidden"]["reason"] == "forbidden" and outcomes["forbidden"]["graph_status"] == "403"
    assert outcomes["ok"]["outcome"] == "ready" and outcomes["thr"]["outcome"] == "ready"
    failed = [t for t in traces if t.get("stage") == "appointment" and t["outcome"] == "failed"]
    assert [t.get("graph_status") for t in failed] == ["503"]
    # AND the processing-time lines are the appointments' only: webhook deliveries have their own stage
    assert all("duration_ms" in t for t in traces if t.get("stage") == "appointment")
    webhook = [t for t in traces if t.get("stage") == "webhook"]
    assert "delivered" in {t.get("outcome") for t in webhook}
    # AND the receiver's 429 is its own, never counted as Graph's
    assert [t.get("reason") for t in webhook].count("receiver_throttled") == 1
    assert not [t for t in graph if t.get("reason") == "receiver_throttled"]


@pytest.mark.e2e
def test_a_queue_depth_is_sent_once_per_reading_and_an_unreadable_one_not_at_all(real_run):
    from shared import queues

    depth = [(value, props["queue"]) for name, value, props in _metrics(real_run) if name == "queue_depth"]
    # One reading per queue that exists (the fresh account has no parked queue that nothing used), though a
    # second run could read none: nothing is repeated from the first, nothing is sent for a failed read
    read = [queue for _, queue in depth]
    assert len(read) == len(set(read)), depth
    assert {queues.APPOINTMENTS, queues.APPOINTMENTS_REJECTED, queues.JOIN_URLS} <= set(read) <= set(queues.ALL_QUEUES)
    assert dict((q, v) for v, q in depth)[queues.APPOINTMENTS_REJECTED] == 3  # forbidden, no organizer, unknown


@pytest.mark.e2e
@pytest.mark.parametrize(("where", "query"), all_queries(), ids=[w for w, _ in all_queries()])
def test_each_query_reads_fields_that_real_invocations_emit(real_run, where, query):
    """Query by query: the table it reads has records, every customDimensions field it names is on them, and
    every `== 'value'` filter it applies matches some record."""
    if re.match(r"\s*requests\b", query):
        # `requests` are written by the Functions host, not by this process; host.json must let successes in.
        levels = json.loads((ROOT / "host.json").read_text())["logging"]["logLevel"]
        assert levels["Host.Results"] == "Information", where
        return
    assert "customEvents" not in query, f"{where}: nothing writes customEvents"
    if "customMetrics" in query:
        records = [props | {"name": name} for name, _, props in _metrics(real_run)]
        records = [r for r in records if r["name"] == "queue_depth"]
    else:
        records = _traces(real_run)
        stage = re.search(r"customDimensions\.stage\)\s*==\s*['\"](\w+)['\"]", query)
        if stage:
            records = [r for r in records if r.get("stage") == stage.group(1)]
    assert records, f"{where}: no record of the kind it reads"
    for field in set(re.findall(r"customDimensions\.(\w+)", query)):
        assert any(field in r for r in records), f"{where}: no record carries customDimensions.{field}"
    for field, value in re.findall(r"customDimensions\.(\w+)\)\s*==\s*['\"]([^'\"]+)['\"]", query):
        if value.startswith("<"):
            continue  # a placeholder the operator fills in
        assert any(str(r.get(field)) == value for r in records), f"{where}: no record has {field} == {value!r}"
