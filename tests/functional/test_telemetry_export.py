"""Telemetry leaves the process as Application Insights envelopes: custom dimensions kept, no duplicates.

The real azure-monitor-opentelemetry exporter posts to a local ingestion endpoint; a fresh interpreter
keeps OpenTelemetry's global providers out of the test process.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
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
