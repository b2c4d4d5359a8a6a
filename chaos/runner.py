"""Conservation run on the local stack: N events through the real app under injected faults, then a ledger.

The app runs in the harness (`python -m devstack.harness`) as a separate process, as the Functions host
would run it, so `--crash` can SIGKILL it mid-run and start a new one. The ledger is computed from the
queues and the webhook receiver only (chaos.ledger), never from the app's counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from chaos.ledger import Ledger, QueueSnapshot, compute_ledger, decode_queue_text
from chaos.workload import (
    ADAMS_UPN,
    BAKER_UPN,
    FABRIKAM,
    FABRIKAM_SCHEDULER_UPN,
    SCHEDULER_UPN,
    Workload,
    build_workload,
)
from devstack.harness import RECEIVE_VISIBILITY_SECONDS
from devstack.stack import ENDPOINTS_FILE, REPO_ROOT, start_stack, stop_stack
from shared import queues

# Settings the app runs with during a chaos run: fast retries, a short Graph timeout (hangs become
# transient failures), and claims that go stale after a minute: a duplicate that arrives while its first
# copy is in flight waits that long (re-enqueued, hidden), not the production five minutes.
APP_SETTINGS = {
    "GRAPH_TIMEOUT_SECONDS": "2",
    # Backoff 1, 1, 2, 6, 17, 49, 146 s (x3 from 0.2 s, at least 1 s): with 20% receiver failures, the unluckiest
    # of 2,000 webhooks would otherwise wait 1+3+9+27+81+243 s and more.
    "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "IDEMPOTENCY_STALE_CLAIM_SECONDS": "60",
    "WEBHOOK_STALE_CLAIM_SECONDS": "60",
}
# With --crash, a dead process's messages come back after 30 s (its receive lease) and its claims are taken
# over after 30 s, so recovery is seen within the run. Without crashes the harness keeps the host's 10-minute
# lease: a long pause of the machine then cannot make a live delivery look abandoned.
CRASH_SETTINGS = {"IDEMPOTENCY_STALE_CLAIM_SECONDS": "30", "WEBHOOK_STALE_CLAIM_SECONDS": "30"}
CRASH_LEASE_SECONDS = 30
# host.json as shipped, except a 1 s visibilityTimeout so that the host's own retries are quick.
QUEUE_OVERRIDES = {"visibilityTimeout": "00:00:01"}
SEND_CONCURRENCY = 32
# Organizers of two tenants: Contoso (the app's own) and Fabrikam, whose administrator consents first.
ORGANIZERS = (SCHEDULER_UPN, ADAMS_UPN, FABRIKAM_SCHEDULER_UPN, BAKER_UPN)


@dataclass(frozen=True)
class FaultMix:
    """What is injected. Probabilities are per Graph request / per webhook delivery / per event."""

    graph_503: float = 0.10
    graph_429: float = 0.05
    graph_hang: float = 0.02
    retry_after_min: int = 1
    retry_after_max: int = 30
    receiver_5xx: float = 0.20
    receiver_slow: float = 0.05
    receiver_slow_ms: int = 3000
    duplicates: float = 0.05
    malformed: float = 0.05
    # Share of events that are the lifecycle of appointments without a meeting (the app creates, moves, deletes).
    lifecycle: float = 0.15

    def graph_rules(self) -> list[dict[str, Any]]:
        """Emulator rules whose *marginal* probabilities are the mix (rules are tried in order)."""
        targets: list[tuple[Any, float, int | None]] = [(503, self.graph_503, None), ("hang", self.graph_hang, None)]
        span = range(self.retry_after_min, self.retry_after_max + 1)
        targets += [(429, self.graph_429 / len(span), seconds) for seconds in span]
        rules, used = [], 0.0
        for status, marginal, retry_after in targets:
            rule: dict[str, Any] = {"meeting_id": "*", "status": status, "times": None,
                                    "probability": min(1.0, marginal / (1.0 - used))}
            if retry_after is not None:
                rule["retry_after"] = retry_after
            rules.append(rule)
            used += marginal
        return rules

    def receiver_plan(self, seed: int) -> dict[str, Any]:
        """The receiver's failure plan: 5xx on a share of deliveries, slow answers on another."""
        return {"status": 503, "statuses": [500, 502, 503, 504], "times": None, "probability": self.receiver_5xx,
                "slow_probability": self.receiver_slow, "slow_ms": self.receiver_slow_ms, "seed": seed}


@dataclass
class RunOptions:
    """One conservation run."""

    events: int = 2000
    seed: int = 7
    crash: bool = False
    crashes: int = 2
    timeout: float = 900.0
    state_dir: Path | None = None
    mix: FaultMix = field(default_factory=FaultMix)
    lease_seconds: int | None = None  # None: CRASH_LEASE_SECONDS with crashes, the harness's default without
    quiet: bool = False


@dataclass
class RunReport:
    """What a run found."""

    options: RunOptions
    ledger: Ledger
    wall_seconds: float
    messages_sent: int
    duplicates_sent: int
    malformed_sent: int
    graph_stats: dict[str, Any]
    receiver_stats: dict[str, int]
    harness_runs: int
    kills: list[float]
    harness_logs: list[Path]
    completed: bool
    ready_by_tenant: dict[str, int] = field(default_factory=dict)  # join-urls results by their tenantId

    @property
    def ok(self) -> bool:
        """Complete and the ledger balances."""
        return self.completed and self.ledger.ok

    def realised_mix(self) -> str:
        """The faults as they actually happened."""
        by_status = {k: int(v) for k, v in (self.graph_stats.get("by_status") or {}).items()}
        total = int(self.graph_stats.get("requests") or 0)
        hung = by_status.get("504", 0) + max(0, total - sum(by_status.values()))

        def pct(n: int, of: int) -> str:
            return f"{n} ({100 * n / of:.1f}%)" if of else str(n)

        r = self.receiver_stats
        return (f"graph requests={total} 503={pct(by_status.get('503', 0), total)} "
                f"429={pct(by_status.get('429', 0), total)} hang={pct(hung, total)} | "
                f"webhook attempts={r['attempts']} 5xx={pct(r['5xx'], r['attempts'])} "
                f"slow={pct(r['slow'], r['attempts'])} | messages={self.messages_sent} "
                f"duplicates={self.duplicates_sent} malformed={self.malformed_sent}")


def connect_organizers(endpoints: dict[str, Any], settings: dict[str, str]) -> None:
    """Connect the seeded organizers of both tenants into the token vault by device code (the production credential
    path).

    The organizer's part, approving the code, is played by the Entra emulator's admin API.
    """
    from shared.identity.vault_acquirer import MsalClients
    from shared.organizers import connect_device
    from shared.services import Services
    from shared.settings import load_settings

    services = Services(load_settings(settings))
    verify = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    with httpx.Client(base_url=endpoints["entra"]["admin_url"] + "/", verify=verify, timeout=30) as entra:
        # Fabrikam lets only an admin consent: as its administrator would through /adminconsent.
        entra.post("consent", json={"tenant": FABRIKAM, "client_id": services.settings.client_id}).raise_for_status()
        for upn in ORGANIZERS:
            def approve(flow: dict[str, Any], upn: str = upn) -> None:
                entra.post("device/approve", json={"user_code": flow["user_code"], "user": upn}).raise_for_status()

            out = io.StringIO()
            if connect_device(services.settings, services.vault, MsalClients(services.settings), upn, out,
                              approve) != 0:
                raise RuntimeError(f"could not connect organizer {upn}: {out.getvalue()}")


def _say(options: RunOptions, text: str) -> None:
    if not options.quiet:
        print(text, flush=True)


def _setting_names() -> set[str]:
    from shared.settings import SETTINGS

    return {spec.name for spec in SETTINGS}


def _host_json(path: Path) -> Path:
    doc = json.loads((REPO_ROOT / "host.json").read_text())
    doc["extensions"]["queues"].update(QUEUE_OVERRIDES)
    path.write_text(json.dumps(doc, indent=2))
    return path


class _Harness:
    """The app in the harness, as a child process (its own session, so a kill takes nothing else)."""

    def __init__(self, state_dir: Path, settings: dict[str, str], lease_seconds: int, crash: bool) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, **settings, **APP_SETTINGS, **(CRASH_SETTINGS if crash else {}),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        self.host_json = _host_json(state_dir / "chaos-host.json")
        self.lease_seconds = lease_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        log_path = self.state_dir / f"harness-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "devstack.harness", "--state-dir", str(self.state_dir), "--http-port", "-1",
                 "--host-json", str(self.host_json), "--lease-seconds", str(self.lease_seconds)],
                cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no chance to finish or settle anything in flight."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()


async def _send_all(client: QueueServiceClient, workload: Workload) -> None:
    encoded = client.get_queue_client(queues.APPOINTMENTS, message_encode_policy=TextBase64EncodePolicy())
    raw = client.get_queue_client(queues.APPOINTMENTS)
    gate = asyncio.Semaphore(SEND_CONCURRENCY)

    async def send(text: str, is_raw: bool) -> None:
        async with gate:
            await (raw if is_raw else encoded).send_message(text)

    await asyncio.gather(*(send(text, is_raw) for text, is_raw in workload.messages))


async def _count(client: QueueServiceClient, name: str) -> int:
    props = await client.get_queue_client(name).get_queue_properties()
    return props.approximate_message_count or 0


async def _read_all(client: QueueServiceClient, name: str) -> list[str]:
    """Every message's raw content. Messages are received with a long lease and not deleted (read-only run end)."""
    queue = client.get_queue_client(name)
    out: list[str] = []
    while True:
        batch = [m async for m in queue.receive_messages(max_messages=32, messages_per_page=32,
                                                          visibility_timeout=3600)]
        if not batch:
            return out
        out.extend(m.content or "" for m in batch)


async def _ensure_queues(client: QueueServiceClient) -> None:
    for name in queues.ALL_QUEUES:
        with contextlib.suppress(Exception):
            await client.get_queue_client(name).create_queue()


async def _settled(client: QueueServiceClient) -> bool:
    # Appointments first: its outputs are written before it is deleted, so once it is empty every
    # outbox message it will ever produce is already there.
    return await _count(client, queues.APPOINTMENTS) == 0 and await _count(client, queues.WEBHOOK_OUTBOX) == 0


async def _terminal_count(client: QueueServiceClient) -> int:
    counts = [await _count(client, q) for q in (queues.JOIN_URLS, queues.APPOINTMENTS_REJECTED,
                                                queues.APPOINTMENTS_POISON)]
    return sum(counts)


async def run(options: RunOptions) -> RunReport:
    """Start a stack, run the workload under faults (and crashes), and compute the ledger."""
    owned_dir = options.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="chaos-")) if owned_dir else Path(options.state_dir or ".")
    if (state_dir / ENDPOINTS_FILE).exists():
        # A running stack (`make run`'s, say) holds other messages, and the run stops its stack at the end.
        raise SystemExit(f"{state_dir} already has a stack: give --state-dir a fresh directory (or none)")
    started = time.monotonic()
    endpoints = start_stack(state_dir, "auto")
    try:
        report = await _run_on_stack(options, state_dir, endpoints, started)
    finally:
        stop_stack(state_dir)
    if owned_dir and report.ok:
        shutil.rmtree(state_dir, ignore_errors=True)  # kept when something is wrong: the logs are the evidence
        report.harness_logs = []
    return report


async def _run_on_stack(options: RunOptions, state_dir: Path, endpoints: dict[str, Any],
                        started: float) -> RunReport:
    mix = options.mix
    workload = build_workload(options.events, options.seed, malformed=mix.malformed, duplicates=mix.duplicates,
                              lifecycle=mix.lifecycle)
    verify = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    graph_admin = httpx.AsyncClient(base_url=endpoints["graph"]["admin_url"] + "/", verify=verify, timeout=30)
    receiver_admin = httpx.AsyncClient(base_url=endpoints["receiver"]["admin_url"] + "/", verify=verify,
                                       timeout=120)
    lease = options.lease_seconds or (CRASH_LEASE_SECONDS if options.crash else RECEIVE_VISIBILITY_SECONDS)
    harness = _Harness(state_dir, {k: str(v) for k, v in endpoints["settings"].items()}, lease, options.crash)
    kills: list[float] = []
    completed = False
    try:
        if harness.env.get("CREDENTIAL_MODE", "vault") == "vault":
            await asyncio.to_thread(connect_organizers, endpoints,
                                    {k: v for k, v in harness.env.items() if k in _setting_names()})
        (await graph_admin.put("faults", json={"seed": options.seed, "rules": mix.graph_rules()})).raise_for_status()
        (await receiver_admin.put("fail", json=mix.receiver_plan(options.seed))).raise_for_status()
        async with QueueServiceClient.from_connection_string(endpoints["azurite"]["connection_string"]) as client:
            await _ensure_queues(client)
            _say(options, f"chaos: {options.events} events (+{workload.duplicates} duplicates, "
                          f"{workload.malformed} malformed, {workload.lifecycle} lifecycle events of "
                          f"{len(workload.appointments)} appointments), seed {options.seed}, stack in {state_dir}")
            await _send_all(client, workload)
            _say(options, f"chaos: {len(workload.messages)} messages enqueued in "
                          f"{time.monotonic() - started:.1f}s; starting the app")
            harness.start()
            kill_at = [options.events * (i + 1) / (options.crashes + 1) for i in range(options.crashes)] \
                if options.crash else []
            deadline = time.monotonic() + options.timeout
            last_report = 0.0
            quiet_polls = 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                terminal = await _terminal_count(client)
                if kill_at and terminal >= kill_at[0]:
                    kill_at.pop(0)
                    harness.kill()
                    kills.append(round(time.monotonic() - started, 1))
                    _say(options, f"chaos: SIGKILL harness at {terminal} terminal messages "
                                  f"(t={kills[-1]}s); restarting")
                    await asyncio.sleep(1.0)
                    harness.start()
                    continue
                if not harness.alive():
                    raise RuntimeError(f"the harness exited on its own; see {harness.logs[-1]}")
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    _say(options, f"chaos: t={time.monotonic() - started:.0f}s terminal={terminal} "
                                  f"appointments={await _count(client, queues.APPOINTMENTS)} "
                                  f"outbox={await _count(client, queues.WEBHOOK_OUTBOX)}")
                quiet_polls = quiet_polls + 1 if not kill_at and await _settled(client) else 0
                if quiet_polls >= 3:
                    completed = True
                    break
            harness.stop()
            in_flight = await _count(client, queues.APPOINTMENTS) + await _count(client, queues.WEBHOOK_OUTBOX)
            snapshot = QueueSnapshot(
                join_urls=await _read_all(client, queues.JOIN_URLS),
                rejected=await _read_all(client, queues.APPOINTMENTS_REJECTED),
                poison=await _read_all(client, queues.APPOINTMENTS_POISON),
                dead_letter=await _read_all(client, queues.WEBHOOK_DEAD_LETTER),
                outbox_poison=await _read_all(client, queues.WEBHOOK_OUTBOX_POISON),
                deliveries=(await receiver_admin.get("deliveries")).json()["deliveries"],
                in_flight=in_flight,
                meetings=(await graph_admin.get("meetings")).json(),
                deleted_meetings=(await graph_admin.get("meetings", params={"deleted": "true"})).json())
        graph_stats = (await graph_admin.get("stats")).json()
    finally:
        harness.stop()
        await graph_admin.aclose()
        await receiver_admin.aclose()
    statuses = Counter(int(d.get("status") or 0) for d in snapshot.deliveries)
    receiver_stats = {"attempts": len(snapshot.deliveries),
                      "5xx": sum(n for status, n in statuses.items() if status >= 500),
                      "slow": sum(1 for d in snapshot.deliveries if d.get("delay_ms"))}
    ledger = compute_ledger(workload.events, snapshot, first_attempt=not options.crash)
    results = {doc["eventId"]: doc.get("tenantId") or "-" for doc in
               (json.loads(decode_queue_text(text)) for text in snapshot.join_urls)}
    return RunReport(options=options, ledger=ledger, wall_seconds=round(time.monotonic() - started, 1),
                     messages_sent=len(workload.messages), duplicates_sent=workload.duplicates,
                     malformed_sent=workload.malformed, graph_stats=graph_stats, receiver_stats=receiver_stats,
                     harness_runs=len(harness.logs), kills=kills, harness_logs=list(harness.logs),
                     completed=completed, ready_by_tenant=dict(Counter(results.values())))


def print_report(report: RunReport) -> None:
    """The ledger line first, then the details."""
    ledger = report.ledger
    print(ledger.line())
    print(f"checks: {ledger.details()}")
    print("tenants: " + " ".join(f"{tenant}={count}" for tenant, count in sorted(report.ready_by_tenant.items()))
          + " (join-urls results by their tenantId)")
    print(f"faults: {report.realised_mix()}")
    if report.options.crash:
        print(f"crash: harness SIGKILLed at t={report.kills}s, {report.harness_runs} harness runs")
    print(f"wall time: {report.wall_seconds:.1f}s")
    for problem in ledger.problems():
        print(f"PROBLEM {problem}")
    if not report.completed:
        print(f"PROBLEM the queues did not settle within {report.options.timeout:.0f}s")
    if report.ok:
        print("OK: nothing lost, every event in exactly one place")
    else:
        logs = ", ".join(str(p) for p in report.harness_logs)
        print(f"FAILED (stack state and harness logs kept: {logs})")


def main(argv: list[str] | None = None) -> int:
    """`python -m chaos`."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="distinct events (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--crash", action="store_true", help="SIGKILL the app mid-run and restart it")
    parser.add_argument("--crashes", type=int, default=2, help="how many kills with --crash (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the queues to settle")
    parser.add_argument("--state-dir", type=Path, help="where the stack lives (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the ledger and fault figures as JSON here")
    args = parser.parse_args(argv)
    options = RunOptions(events=args.events, seed=args.seed, crash=args.crash, crashes=args.crashes,
                         timeout=args.timeout, state_dir=args.state_dir)
    report = asyncio.run(run(options))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps({"ledger": report.ledger.to_dict(), "wall_seconds": report.wall_seconds,
                                         "graph_stats": report.graph_stats, "receiver": report.receiver_stats,
                                         "kills": report.kills, "mix": asdict(options.mix),
                                         "realised": report.realised_mix()}, indent=2))
    return 0 if report.ok else 1
