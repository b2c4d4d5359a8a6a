"""What every benchmark shares: the local stack, the app's settings, fresh processes, memory, statistics."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST_JSON = REPO_ROOT / "host.json"
SEED = REPO_ROOT / "devstack" / "seed"
# The seeded organizer and one of their meetings (devstack/seed): every benchmark event resolves it.
ORGANIZER = "scheduler@contoso.test"
MEETING_ID = json.loads((SEED / "meetings.json").read_text())[0]["id"]


@dataclass
class Figure:
    """One `name=value` line, with its baseline, target and what it means."""

    name: str
    value: float | None
    target: str  # e.g. "<= 0.6"
    detail: str = ""
    baseline: str = ""
    fmt: str = "{:.2f}"

    @property
    def met(self) -> bool | None:
        """Whether the value meets the target (None when there is no value or no numeric target)."""
        if self.value is None:
            return None
        op, _, bound = self.target.partition(" ")
        try:
            limit = float(bound)
        except ValueError:
            return None
        return {"<=": self.value <= limit, ">=": self.value >= limit, "==": self.value == limit}.get(op)

    def line(self) -> str:
        """`name=value`."""
        return f"{self.name}={'n/a' if self.value is None else self.fmt.format(self.value)}"


@dataclass
class Report:
    """Figures in the order they were measured, plus informational lines."""

    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        """Record a figure and print its line at once (a long run shows progress)."""
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def note(self, text: str) -> None:
        """An informational line printed after the figures."""
        self.notes.append(text)
        print(f"# {text}", flush=True)


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def queue_concurrency(host_json: Path = HOST_JSON) -> tuple[int, int]:
    """(batchSize, newBatchThreshold) from host.json, with the host's defaults."""
    queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
    batch = min(int(queues.get("batchSize", 16)), 32)
    threshold = int(queues.get("newBatchThreshold", batch // 2))
    return batch, threshold


def rss_mb(pid: int | str = "self", field_name: str = "VmRSS") -> float:
    """Resident set size (VmRSS) or its peak (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field_name} not in /proc/{pid}/status")


def sample_settings(ca_pem: Path) -> dict[str, str]:
    """The app's settings from local.settings.sample.json (what a cold start needs; no stack)."""
    values: dict[str, str] = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = {k: str(REPO_ROOT / v) if k.endswith("_FILE") else v for k, v in values.items()}
    settings["TLS_CA_BUNDLE"] = str(ca_pem)
    return settings


def stack_settings(endpoints: dict[str, Any]) -> dict[str, str]:
    """The app's settings on the local stack. Organizers sign in as the seeded test users (`dev_password`),
    as in the e2e pipeline tests: the vault mode needs each organizer connected interactively first."""
    return {**endpoints["settings"], "CREDENTIAL_MODE": "dev_password"}


def child_env(settings: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a fresh Python process: the repo importable, the app's settings set."""
    env = dict(os.environ)
    env.update(settings or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_child(code: str, env: dict[str, str], timeout: float = 120.0) -> dict[str, Any]:
    """Run `python -c code` in a fresh process; the code prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,  # noqa: S603
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def event_text(event_id: str, organizer: str = ORGANIZER, meeting_id: str = MEETING_ID) -> str:
    """One appointment event in the plain JSON envelope."""
    return json.dumps({"id": event_id, "type": "appointment.created",
                       "appointmentId": f"apt-{event_id}", "organizer": organizer, "onlineMeetingId": meeting_id})


def create_event_text(event_id: str, organizer: str = ORGANIZER) -> str:
    """An appointment without a meeting: the app creates one (createOrGet, then its join URL)."""
    return json.dumps({"id": event_id, "type": "appointment.created", "appointmentId": f"apt-{event_id}",
                       "organizer": organizer, "sequence": 1, "subject": "Bench",
                       "startDateTime": "2026-12-01T09:00:00Z", "endDateTime": "2026-12-01T09:30:00Z"})


def run_id() -> str:
    """A short unique prefix, so events of different runs never hit each other's idempotency records."""
    return uuid.uuid4().hex[:8]


@contextlib.contextmanager
def local_stack() -> Iterator[dict[str, Any]]:
    """Azurite and the emulators on free ports, always stopped."""
    from devstack.stack import start_stack, stop_stack

    with tempfile.TemporaryDirectory(prefix="bench-stack-") as state_dir:
        endpoints = start_stack(state_dir, "auto")
        try:
            yield endpoints
        finally:
            stop_stack(state_dir)


def admin(url: str, ca_pem: str, method: str = "GET", body: Any = None) -> Any:
    """Call an emulator's loopback admin API."""
    import ssl
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - our own emulator
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca_pem),  # noqa: S310
                                timeout=10) as response:
        return json.loads(response.read() or b"null")


def set_graph_latency(endpoints: dict[str, Any], latency_ms: float) -> None:
    """Fixed latency on every Graph emulator request, no faults."""
    admin(endpoints["graph"]["admin_url"] + "/faults", endpoints["ca_bundle"], "PUT",
          {"latency_ms": latency_ms, "rules": []})


class WorkerLogHandler(logging.Handler):
    """Stands in for the Functions worker's log forwarding: every record is formatted, then dropped."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Format (the cost the worker pays) and count."""
        self.format(record)
        self.records += 1


def worker_logging() -> WorkerLogHandler:
    """Root logger at INFO with the stand-in handler, as host.json's `default: Information` asks."""
    handler = WorkerLogHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler
