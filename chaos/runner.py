"""Conservation run on the local stack: N events through the real app under injected faults, then a ledger.

The app runs as several instances on one storage account (chaos.fleet: `python -m devstack.harness`
processes, as the Functions host would run it on several machines), and the run disrupts them
(chaos.disruptions): kill -9 and restart, a storage pause, a kill inside a token refresh. Organizers are
connected through the token vault with short access-token lifetimes, so refreshes happen during the run.
The ledger is computed from the queues and the webhook receiver only (chaos.ledger), and the rest from the
vault and the emulators (chaos.accounts), never from the app's counters. Some appointments end during the run
(--ended): the Graph emulator plays their sessions, and each one's appointment.attendance webhook is held to
what was played (chaos.ledger.attendance_ledger). By default the run is calendar-backed (MEETING_KIND=calendar):
the staff member edits some appointments in Outlook while Graph's change notifications are duplicated, reordered,
dropped and their subscriptions removed, and every record must end as its calendar event
(chaos.organizer, chaos.organizer_ledger).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from chaos.accounts import Accounts, attendance_reads, graph_accounts, split_duplicates, wrongly_disconnected
from chaos.disruptions import Disrupter, Disruption, Disruptions
from chaos.fleet import Fleet
from chaos.ledger import (
    AttendanceLedger,
    Ledger,
    QueueSnapshot,
    attendance_ledger,
    compute_ledger,
    decode_queue_text,
)
from chaos.organizer import (
    CALENDAR_SETTINGS,
    MOVE,
    NOTIFICATION_STEPS,
    RUN_FAULTS,
    SUBSCRIPTION_CONFIG,
    NotificationDisrupter,
    NotificationFront,
    OrganizerPlan,
    PlayedEdit,
    events_by_appointment,
    move_ended,
    plan_edits,
    play_edits,
)
from chaos.organizer_ledger import OrganizerLedger, organizer_ledger
from chaos.workload import (
    ADAMS_UPN,
    BAKER_UPN,
    FABRIKAM,
    FABRIKAM_SCHEDULER_UPN,
    READY,
    SCHEDULER_UPN,
    EndedAppointment,
    Workload,
    build_workload,
)
from devstack.harness import RECEIVE_VISIBILITY_SECONDS
from devstack.stack import ENDPOINTS_FILE, REPO_ROOT, start_stack, stop_stack
from shared import queues
from shared.graph.meetings import external_id

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
    # Attendance after each appointment, scaled down (--ended): read 12 s after the end, a missing report looked
    # for again until 30 s later, then told attendance_unavailable. The organizers connect with the artifact scope.
    "ATTENDANCE_REPORTS": "true",
    "ATTENDANCE_GRACE_MINUTES": "0.2",
    "ATTENDANCE_WAIT_HOURS": str(30 / 3600),
}
ATTENDANCE_GRACE_SECONDS, ATTENDANCE_WAIT_SECONDS = 12.0, 30.0
# How long past the last check's wait the run waits for a missing attendance webhook before it counts it
# missing: a Retry-After of 30 s on the last look, and a killed instance's lease of 30 s, with room to spare.
ATTENDANCE_PATIENCE_SECONDS = 90.0
# When instances are killed, a dead process's messages come back after 30 s (its receive lease, which a live
# instance renews every 15 s) and its claims are taken over after 30 s, so recovery is seen within the run.
# Without kills the harness keeps the host's 10-minute lease.
CRASH_SETTINGS = {"IDEMPOTENCY_STALE_CLAIM_SECONDS": "30", "WEBHOOK_STALE_CLAIM_SECONDS": "30"}
CRASH_LEASE_SECONDS = 30
# host.json as shipped, except a 1 s visibilityTimeout so that the host's own retries are quick.
QUEUE_OVERRIDES = {"visibilityTimeout": "00:00:01"}
SEND_CONCURRENCY = 32
# Messages kept waiting on `appointments` while the run feeds its workload (see _feed).
BACKLOG = 500
# Organizers of two tenants: Contoso (the app's own) and Fabrikam, whose administrator consents first.
ORGANIZERS = (SCHEDULER_UPN, ADAMS_UPN, FABRIKAM_SCHEDULER_UPN, BAKER_UPN)
# Access tokens live 330 s: with the 300 s refresh margin each is used for 30 s, so every instance refreshes
# each organizer every half minute of the run.
TOKEN_LIFETIME_SECONDS = 330
# The heavier run `--heavy` selects (docs/reliability.md; the current figures: docs/maintain/figures.md).
HEAVY = {"events": 10000, "kills": 6, "storage_pause": 20.0, "refresh_kills": ("before", "between", "after"),
         "timeout": 2400.0, "ended": 100, "organizer_edits": 150}


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
    # Share of events that are the lifecycle of appointments without a meeting (the app creates, moves, deletes).
    lifecycle: float = 0.15
    malformed: float = 0.05

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
    ended: int = 0  # appointments (among the events' lifecycle ones) that end during the run: attendance told
    # "calendar": the app makes calendar events (MEETING_KIND=calendar), the staff member edits some of them in
    # Outlook and Graph's notifications come back under faults; "standalone": createOrGet meetings, no organizer side.
    meeting_kind: str = "calendar"
    organizer_edits: int = 40  # calendar: lifecycle appointments whose event the staff member edits
    disruptions: Disruptions = field(default_factory=Disruptions)
    token_lifetime: int = TOKEN_LIFETIME_SECONDS
    # The Entra emulator's refresh-token rotation: "entra" (a used one stays valid, as Entra does) or "strict"
    # (single-use: what a kill between redeem and save costs on a platform that revoked on use).
    rotation: str = "entra"
    timeout: float = 900.0
    state_dir: Path | None = None
    mix: FaultMix = field(default_factory=FaultMix)
    lease_seconds: int | None = None  # None: CRASH_LEASE_SECONDS with kills, the harness's default without
    quiet: bool = False

    @property
    def calendar(self) -> bool:
        """Whether the run is calendar-backed (organizer edits and notifications)."""
        return self.meeting_kind == "calendar"

    @property
    def crash(self) -> bool:
        """Whether instances die mid-run."""
        return self.disruptions.any_kill


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
    disruptions: list[Disruption]
    harness_logs: list[Path]
    completed: bool
    accounts: Accounts
    ready_by_tenant: dict[str, int] = field(default_factory=dict)  # join-urls results by their tenantId
    attendance: AttendanceLedger | None = None
    sessions_played: dict[str, float] = field(default_factory=dict)  # appointment -> seconds into the run
    # Seconds the run waited for attendance after everything else had settled (the attendance's cost in time).
    attendance_wait: float | None = None
    organizer: OrganizerLedger | None = None  # a calendar-backed run's organizer side
    notifications: dict[str, Any] = field(default_factory=dict)  # the emulator's delivery totals, the front's counts

    @property
    def kills(self) -> list[float]:
        """When instances were killed (seconds into the run)."""
        return [d.at for d in self.disruptions if d.instance is not None]

    @property
    def ok(self) -> bool:
        """Complete, the ledgers balance, and the targets: no duplicate delivery, nobody disconnected."""
        return (self.completed and self.ledger.ok and not self.accounts.duplicate_deliveries
                and not self.accounts.wrongly_disconnected and (self.attendance is None or self.attendance.ok)
                and (self.organizer is None or self.organizer.ok))

    def targets(self) -> str:
        """The run's targets, one line: an ended appointment never told counts as lost, a second attendance
        webhook-id for one as a duplicate delivery, and one told otherwise than played as attendance_wrong; an
        organizer's edit never told counts as lost, told under a second webhook-id as a duplicate delivery, and a
        record that disagrees with its calendar event (or a change told that the organizer never made) as diverged
        (calendar-backed runs only)."""
        attendance, organizer = self.attendance, self.organizer
        lost = (len(self.ledger.lost) + (len(attendance.missing) if attendance else 0)
                + (len(organizer.untold) if organizer else 0))
        duplicates = (len(self.accounts.duplicate_deliveries) + (len(attendance.second_ids) if attendance else 0)
                      + (len(organizer.second_ids) if organizer else 0))
        return (f"lost={lost} duplicate_deliveries={duplicates} "
                f"wrongly_disconnected={len(self.accounts.wrongly_disconnected)} "
                f"attendance_wrong={len(attendance.wrong) if attendance else 0}"
                + (f" diverged={organizer.diverged_count}" if organizer else ""))

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
    from shared.identity.msal import MsalClients
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


async def _feed(client: QueueServiceClient, workload: Workload, backlog: int) -> None:
    """Send the workload's messages, keeping about `backlog` of them waiting on `appointments`.

    Azurite's receive costs CPU in proportion to the queue's depth (docs/performance.md, section 9), which
    Azure's does not: 10,000 messages enqueued at once made every receive of the run slow. A send that fails
    (storage paused) is tried again until it goes through.
    """
    encoded = client.get_queue_client(queues.APPOINTMENTS, message_encode_policy=TextBase64EncodePolicy())
    raw = client.get_queue_client(queues.APPOINTMENTS)
    gate = asyncio.Semaphore(SEND_CONCURRENCY)

    async def send(text: str, is_raw: bool) -> None:
        async with gate:
            while True:
                try:
                    await (raw if is_raw else encoded).send_message(text)
                    return
                except Exception:
                    await asyncio.sleep(1.0)

    # The ended appointments' events first, ahead of the backlog: their meetings must exist before they end.
    await asyncio.gather(*(send(text, is_raw) for text, is_raw in workload.early))
    pending = list(workload.messages)
    while pending:
        try:
            room = backlog - await _count(client, queues.APPOINTMENTS)
        except Exception:
            room = 0
        if room > 0:
            batch, pending = pending[:room], pending[room:]
            await asyncio.gather(*(send(text, is_raw) for text, is_raw in batch))
        await asyncio.sleep(0.2)


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


async def _play_sessions(graph_admin: httpx.AsyncClient, ended: list[EndedAppointment], played: dict[str, float],
                         played_at: dict[str, str], run_started: float, calendar: bool = False) -> None:
    """Play each ended appointment's session on its meeting as soon as the app has made the meeting.

    The sessions lie in the past, so their reports exist at once, before the checks are due (a report-late one
    still runs). A cancelled appointment's meeting gets one too while it exists.
    """
    waiting = {a.appointment_id: a for a in ended if a.session() is not None}
    by_external_id = {external_id(a.appointment_id): a.appointment_id for a in ended}
    until = max((a.ends_at for a in ended), default=datetime.now(UTC)) + timedelta(seconds=ATTENDANCE_GRACE_SECONDS)
    while waiting and datetime.now(UTC) < until:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            # A standalone meeting carries the appointment as its externalId; a calendar event's meeting is found
            # through the event (the app's extended property).
            meetings = {by_external_id[str(m.get("externalId"))]: str(m["id"])
                        for m in (await graph_admin.get("meetings")).json() if m.get("externalId") in by_external_id}
            if calendar:
                meetings |= {apt: str(found[0]["onlineMeetingId"]) for apt, found in
                             events_by_appointment((await graph_admin.get("events")).json()).items()
                             if apt in waiting and found[0].get("onlineMeetingId")}
            for appointment_id, meeting_id in meetings.items():
                appointment = waiting.get(appointment_id)
                if appointment is None:
                    continue
                answer = await graph_admin.post(f"meetings/{quote(meeting_id, safe='')}/sessions",
                                                json=appointment.session())
                if answer.status_code == 201:
                    played[appointment.appointment_id] = round(time.monotonic() - run_started, 1)
                    played_at[appointment.appointment_id] = datetime.now(UTC).isoformat()
                    del waiting[appointment.appointment_id]
        await asyncio.sleep(1.0)


async def _attendance_done(receiver_admin: httpx.AsyncClient, ended: list[EndedAppointment]) -> bool:
    """Whether every ended appointment owed an attendance webhook has had one delivered (and every check is due)."""
    if not ended:
        return True
    last_due = max(a.ends_at for a in ended) + timedelta(seconds=ATTENDANCE_GRACE_SECONDS + 2)
    if datetime.now(UTC) < last_due:
        return False
    owed = {a.appointment_id for a in ended if a.expected is not None}
    deliveries = (await receiver_admin.get("deliveries")).json()["deliveries"]
    told = {str(((d.get("body") or {}).get("data") or {}).get("appointmentId")) for d in deliveries
            if d.get("type") == "appointment.attendance" and 200 <= int(d.get("status") or 0) < 300}
    return owed <= told


def _attendance_deadline(ended: list[EndedAppointment], run_started: float) -> float:
    """The monotonic time after which a missing attendance webhook is counted missing, not waited for."""
    if not ended:
        return run_started
    last = max(a.ends_at for a in ended)
    left = (last - datetime.now(UTC)).total_seconds()
    return time.monotonic() + left + ATTENDANCE_GRACE_SECONDS + ATTENDANCE_WAIT_SECONDS + ATTENDANCE_PATIENCE_SECONDS


async def _settled(client: QueueServiceClient, graph_admin: httpx.AsyncClient | None = None) -> bool:
    # Appointments first: its outputs are written before it is deleted, so once it is empty every
    # outbox message it will ever produce is already there. A calendar-backed run also waits for Graph to have
    # delivered every notification (nothing pending or in flight) and for the app to have handled them.
    if graph_admin is not None:
        subscriptions = (await graph_admin.get("subscriptions", params={"state": "active"})).json()
        if subscriptions["pending"] or subscriptions["in_flight"] or await _count(
                client, queues.CALENDAR_NOTIFICATIONS):
            return False
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


def _vault(settings: dict[str, str]) -> Any:
    from shared.services import Services
    from shared.settings import load_settings

    return Services(load_settings(settings)).vault


def _vault_etag(vault: Any, organizer: str) -> str | None:
    entry = vault.get(organizer)
    return None if entry is None else str(entry.etag)


def _calendar_ports(options: RunOptions) -> tuple[int, list[int], dict[str, str]]:
    """A calendar-backed run's front port, one HTTP port per instance, and the app's calendar settings."""
    if not options.calendar:
        return 0, [], {}
    front_port, *http_ports = _free_ports(options.disruptions.instances + 1)
    # Graph posts to one public address (the front); each instance serves the HTTP functions on its own port.
    return front_port, http_ports, {**CALENDAR_SETTINGS,
                                    "GRAPH_NOTIFICATION_BASE_URL": f"http://127.0.0.1:{front_port}/api"}


def _organizer_verdict(calendar: _CalendarState | None, workload: Workload, ledger: Ledger, edits: list[PlayedEdit],
                       snapshot: QueueSnapshot, poison: int) -> OrganizerLedger | None:
    """The organizer ledger of a calendar-backed run (None otherwise)."""
    if calendar is None:
        return None
    cancelled = {str(e.appointment_id) for e in workload.events
                 if e.extra.get("type") == "cancelled" and READY in ledger.places.get(e.key, set())}
    return organizer_ledger(edits, snapshot.deliveries, calendar.records, calendar.events, cancelled, poison=poison)


async def _stop_front(front: NotificationFront | None) -> None:
    if front is not None:
        await front.stop()


async def _start_notifications(graph_admin: httpx.AsyncClient, front: NotificationFront | None, port: int,
                               seed: int) -> None:
    """The emulator's delivery timings scaled down and the run's notification faults on; the front door open."""
    if front is None:
        return
    (await graph_admin.put("subscriptions/config", json={"reset": True, **SUBSCRIPTION_CONFIG})).raise_for_status()
    (await graph_admin.put("subscriptions/faults", json={**RUN_FAULTS, "seed": seed})).raise_for_status()
    await front.start(port)


def _with_organizer_edits(workload: Workload, options: RunOptions) -> tuple[Workload, list[OrganizerPlan]]:
    """The organizer's edits: some ended appointments moved in Outlook, and edits on other appointments."""
    ended, ended_moves = move_ended(workload.ended)
    ended_ids = {a.appointment_id for a in ended}
    plans = plan_edits([a for a in workload.appointments if a not in ended_ids], options.organizer_edits,
                       options.seed)
    return replace(workload, ended=ended), plans + ended_moves


@dataclass(frozen=True)
class _CalendarState:
    """What a calendar-backed run reads at its end: the emulator's events, the app's records, delivery totals."""

    events: list[dict[str, Any]]
    records: dict[str, dict[str, Any] | None]
    notifications: dict[str, Any]


async def _calendar_state(graph_admin: httpx.AsyncClient, front: NotificationFront, settings: dict[str, str],
                          workload: Workload, waited: tuple[float, int]) -> _CalendarState:
    notifications = {**(await graph_admin.get("subscriptions")).json()["totals"],
                     "front_forwarded": front.forwarded, "front_failed": front.failed,
                     "waited_for_resync_s": round(waited[0], 1), "resync_missing": waited[1]}
    return _CalendarState((await graph_admin.get("events")).json(),
                          await _records(settings, workload.appointments), notifications)


# How long past the calm the run waits for every calendar's resync (three of the run's one-minute periods) before it
# ends anyway and reports the organizers still behind.
RESYNC_PATIENCE_SECONDS = 180.0


class _Resynced:
    """A calendar-backed run ends only after every organizer's calendar was resynced once everything else was calm:
    a notification Graph lost without a `missed` (or that the app parked in poison) is repaired by the app's
    scheduled resync (CALENDAR_RESYNC_HOURS, a minute here), as in production. Also tells the organizer's player
    whether the app has booked an appointment. Reads the app's tables, never its counters."""

    def __init__(self, settings: dict[str, str] | None) -> None:
        self._services: Any = None
        self._subscriptions: Any = None
        if settings is not None:
            from shared.services import Services
            from shared.settings import load_settings
            from shared.storage.subscriptions import TableSubscriptionStore

            loaded = load_settings(settings)
            self._services = Services(loaded)
            self._subscriptions = TableSubscriptionStore(loaded.storage, loaded.appointments_table)
        self.calm_at: datetime | None = None
        self.waited = 0.0
        self.missing = 0  # organizers whose calendar no resync round completed for, when the run gave up waiting

    async def aclose(self) -> None:
        if self._services is not None:
            await self._subscriptions.aclose()
            await self._services.aclose()

    async def booked(self, appointment: str) -> bool:
        """Whether the app has booked the appointment (its record no longer pending)."""
        from shared.common.vocabulary import AppointmentStatus

        try:
            record = await self._services.appointments.get(appointment)
        except Exception:  # storage paused: not yet
            return False
        return record is not None and record.status != AppointmentStatus.PENDING

    async def after_calm(self, quiet: bool) -> bool:
        """`quiet`, and (calendar-backed) every active subscription's calendar resynced since the run was calm."""
        if self._services is None or not quiet:
            return quiet
        self.calm_at = self.calm_at or datetime.now(UTC)
        try:
            rows = [row for row in await self._subscriptions.all() if row.state == "active"]
        except Exception:  # storage paused: not yet
            return False
        behind = [row for row in rows if not row.last_resync_at or datetime.fromisoformat(
            row.last_resync_at.replace("Z", "+00:00")) < self.calm_at]
        self.waited = (datetime.now(UTC) - self.calm_at).total_seconds()
        if self.waited > RESYNC_PATIENCE_SECONDS:
            self.missing = len(behind)  # reported: its calendar's changes lost by Graph stay unrepaired
            return True
        return bool(rows) and not behind


async def _records(settings: dict[str, str], appointments: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """The app's appointment records (read from its table after the run), as plain fields."""
    from shared.services import Services
    from shared.settings import load_settings

    services = Services(load_settings(settings))
    try:
        out: dict[str, dict[str, Any] | None] = {}
        for appointment in appointments:
            record = await services.appointments.get(appointment)
            out[appointment] = asdict(record) if record is not None else None
        return out
    finally:
        await services.aclose()


def _free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held together while picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _organizer_health(vault: Any) -> list[dict[str, Any]]:
    return [entry.health() for entry in vault.entries()]


async def _run_on_stack(options: RunOptions, state_dir: Path, endpoints: dict[str, Any],
                        started: float) -> RunReport:
    mix, plan = options.mix, options.disruptions
    verify = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    graph_admin = httpx.AsyncClient(base_url=endpoints["graph"]["admin_url"] + "/", verify=verify, timeout=30)
    receiver_admin = httpx.AsyncClient(base_url=endpoints["receiver"]["admin_url"] + "/", verify=verify,
                                       timeout=120)
    entra_admin = httpx.AsyncClient(base_url=endpoints["entra"]["admin_url"] + "/", verify=verify, timeout=30)
    lease = options.lease_seconds or (CRASH_LEASE_SECONDS if options.crash else RECEIVE_VISIBILITY_SECONDS)
    env = {**os.environ, **{k: str(v) for k, v in endpoints["settings"].items()}, **APP_SETTINGS,
           **(CRASH_SETTINGS if options.crash else {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    front_port, http_ports, calendar_env = _calendar_ports(options)
    env |= calendar_env
    app_settings = {k: v for k, v in env.items() if k in _setting_names()}
    fleet = Fleet(plan.instances, state_dir, env, _host_json(state_dir / "chaos-host.json"), lease,
                  http_ports=http_ports or None)
    front = NotificationFront(fleet.http_ports) if options.calendar else None
    vault = _vault(app_settings)
    disrupter = Disrupter(fleet, state_dir, entra_admin, lambda organizer: _vault_etag(vault, organizer), started,
                          int(endpoints["ports"]["entra"]), pause_seconds=plan.storage_pause,
                          notify=NotificationDisrupter(graph_admin, options.seed) if options.calendar else None)
    steps = sorted([*plan.plan(), *(NOTIFICATION_STEPS if options.calendar else ())])
    plans: list[OrganizerPlan] = []
    edits: list[PlayedEdit] = []
    settled_now = [False]  # the last poll's verdict, for the organizer's player
    resynced = _Resynced(app_settings if options.calendar else None)
    running: set[asyncio.Task[None]] = set()
    lanes: dict[str, asyncio.Task[None]] = {}
    played: dict[str, float] = {}
    played_at: dict[str, str] = {}
    settled_at: float | None = None  # when all but the attendance had settled (seconds since the start)
    ended_at = 0.0  # when everything had (the first of the quiet polls that end the run)
    completed = False
    run_started = time.monotonic()
    try:
        # Short access tokens from the first sign-in on: the connected caches hold one too.
        (await entra_admin.put("config", json={"access_token_lifetime": options.token_lifetime})).raise_for_status()
        if env.get("CREDENTIAL_MODE", "vault") == "vault":
            await asyncio.to_thread(connect_organizers, endpoints, app_settings)
        # Count only the run's token traffic (reset also restores lifetimes: set it again).
        (await entra_admin.post("reset")).raise_for_status()
        (await entra_admin.put("config", json={"access_token_lifetime": options.token_lifetime,
                                               "refresh_token_rotation": options.rotation})).raise_for_status()
        (await graph_admin.put("faults", json={"seed": options.seed, "rules": mix.graph_rules()})).raise_for_status()
        (await receiver_admin.put("fail", json=mix.receiver_plan(options.seed))).raise_for_status()
        await _start_notifications(graph_admin, front, front_port, options.seed)
        async with QueueServiceClient.from_connection_string(endpoints["azurite"]["connection_string"]) as client:
            await _ensure_queues(client)
            # Built now: the ended appointments' windows are counted from the moment the app starts.
            workload = build_workload(options.events, options.seed, malformed=mix.malformed,
                                      duplicates=mix.duplicates, lifecycle=mix.lifecycle, ended=options.ended,
                                      now=datetime.now(UTC))
            if options.calendar:
                workload, plans = _with_organizer_edits(workload, options)
            _say(options, f"chaos: {options.events} events (+{workload.duplicates} duplicates, "
                          f"{workload.malformed} malformed, {workload.lifecycle} lifecycle events of "
                          f"{len(workload.appointments)} appointments, {len(workload.ended)} of them ending "
                          f"during the run), seed {options.seed}, {plan.instances} instances, stack in {state_dir}")
            run_started = time.monotonic()
            fleet.start()
            feeder = asyncio.create_task(_feed(client, workload, BACKLOG))
            player = asyncio.create_task(_play_sessions(graph_admin, workload.ended, played, played_at, run_started,
                                                        options.calendar))
            # Once every message is in and handled, an appointment whose event never came gets no edits.
            editor = asyncio.create_task(play_edits(graph_admin, plans, edits, time.monotonic() + options.timeout,
                                                    lambda: feeder.done() and settled_now[0],
                                                    resynced.booked))
            attendance_deadline = _attendance_deadline(workload.ended, run_started)
            _say(options, f"chaos: {len(workload.early) + len(workload.messages)} messages ({len(workload.early)} of "
                          f"the ended appointments first, then the rest fed {BACKLOG} at a time), "
                          f"after {time.monotonic() - started:.1f}s; the app started; plan {steps}")
            deadline = time.monotonic() + options.timeout
            last_report, quiet_polls, terminal = 0.0, 0, 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                try:
                    terminal = await _terminal_count(client)
                    settled = await _settled(client, graph_admin if options.calendar else None)
                except Exception:  # storage paused: the run goes on, the app has to cope
                    quiet_polls = 0
                    continue
                # One disruption at a time in each lane, so each one's effects can be told apart: kills and
                # pauses in one, refresh kills (which wait for a refresh, on the emulator's one hold) in the other.
                while steps and terminal >= steps[0][0] * options.events:
                    lane = steps[0][1].split(":", 1)[0] if ":" in steps[0][1] else "other"
                    if lane in lanes and not lanes[lane].done():
                        break
                    _, action = steps.pop(0)
                    task = asyncio.create_task(disrupter.run(action))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    lanes[lane] = task
                dead = [i for i in fleet.dead() if not any(i.number == d.instance for d in disrupter.done)]
                if dead and not running:
                    raise RuntimeError(f"instance {dead[0].number} exited on its own; see {dead[0].logs[-1]}")
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    _say(options, f"chaos: t={time.monotonic() - started:.0f}s terminal={terminal} "
                                  f"appointments={await _count(client, queues.APPOINTMENTS)} "
                                  f"outbox={await _count(client, queues.WEBHOOK_OUTBOX)}")
                settled_now[0] = settled
                quiet = settled and feeder.done() and not steps and not running and editor.done()
                if quiet and settled_at is None:
                    settled_at = time.monotonic() - started
                if quiet and time.monotonic() < attendance_deadline:
                    try:
                        quiet = await _attendance_done(receiver_admin, workload.ended)
                    except (httpx.HTTPError, ValueError):
                        quiet = False
                quiet = await resynced.after_calm(quiet)
                quiet_polls = quiet_polls + 1 if quiet else 0
                if quiet_polls == 1:
                    ended_at = time.monotonic() - started
                if quiet_polls >= 3:
                    completed = True
                    break
            for task in [*running, feeder, player, editor]:
                task.cancel()
            await asyncio.gather(*running, feeder, player, editor, return_exceptions=True)
            run_seconds = time.monotonic() - run_started
            await asyncio.to_thread(fleet.stop)
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
                deleted_meetings=(await graph_admin.get("meetings", params={"deleted": "true"})).json(),
                attendance=await _read_all(client, queues.ATTENDANCE),
                attendance_poison=await _read_all(client, queues.ATTENDANCE_CHECKS_POISON))
            notification_poison = await _count(client, queues.CALENDAR_NOTIFICATIONS_POISON)
        calendar = await _calendar_state(graph_admin, front, app_settings, workload,
                                                                (resynced.waited, resynced.missing)) if front \
            else None
        graph_stats = (await graph_admin.get("stats")).json()
        entra_stats = (await entra_admin.get("stats")).json()
        health = await asyncio.to_thread(_organizer_health, vault)
    finally:
        await asyncio.to_thread(fleet.stop)
        await _stop_front(front)
        await resynced.aclose()
        await graph_admin.aclose()
        await receiver_admin.aclose()
        await entra_admin.aclose()
    statuses = Counter(int(d.get("status") or 0) for d in snapshot.deliveries)
    receiver_stats = {"attempts": len(snapshot.deliveries),
                      "5xx": sum(n for status, n in statuses.items() if status >= 500),
                      "slow": sum(1 for d in snapshot.deliveries if d.get("delay_ms"))}
    ledger = compute_ledger(workload.events, snapshot, first_attempt=not options.crash)
    moved_at = {e.appointment_id: e.at for e in edits if e.applied and e.edit.kind == MOVE}
    attendance = attendance_ledger(workload.ended, snapshot, played_at, moved_at) if workload.ended else None
    organizer = _organizer_verdict(calendar, workload, ledger, edits, snapshot, notification_poison)
    calls, needed, surplus = graph_accounts(workload.events, ledger.places, graph_stats,
                                            attendance_reads=attendance_reads(snapshot.attendance))
    real, explained = split_duplicates(snapshot.deliveries,
                                       [d.wall for d in disrupter.done if d.instance is not None])
    status, disconnected = wrongly_disconnected(health)
    accounts = Accounts(organizer_status=status, wrongly_disconnected=disconnected,
                        token_requests={k: int(v) for k, v in (entra_stats.get("by_user") or {}).items()},
                        token_lifetime=options.token_lifetime, run_seconds=run_seconds, graph_calls=calls,
                        graph_needed=needed, graph_surplus=surplus, duplicate_deliveries=real,
                        redelivered_after_kill=explained, instances=plan.instances,
                        refreshes_by_grant=dict(entra_stats.get("by_grant") or {}))
    results = {doc["eventId"]: doc.get("tenantId") or "-" for doc in
               (json.loads(decode_queue_text(text)) for text in snapshot.join_urls)}
    return RunReport(options=options, ledger=ledger, wall_seconds=round(time.monotonic() - started, 1),
                     messages_sent=len(workload.early) + len(workload.messages), duplicates_sent=workload.duplicates,
                     malformed_sent=workload.malformed, graph_stats=graph_stats, receiver_stats=receiver_stats,
                     harness_runs=fleet.runs, disruptions=list(disrupter.done), harness_logs=fleet.logs,
                     completed=completed, accounts=accounts,
                     ready_by_tenant=dict(Counter(results.values())), attendance=attendance,
                     sessions_played=played, attendance_wait=(round(ended_at - settled_at, 1)
                                                              if settled_at is not None else None),
                     organizer=organizer, notifications=calendar.notifications if calendar else {})


def print_report(report: RunReport) -> None:
    """The ledger line and the targets first, then the details."""
    ledger, accounts = report.ledger, report.accounts
    print(ledger.line())
    if report.attendance is not None:
        print(report.attendance.line())
    if report.organizer is not None:
        print(report.organizer.line())
    print(f"targets: {report.targets()}")
    print(f"checks: {ledger.details()} redelivered_after_kill={len(accounts.redelivered_after_kill)}")
    if report.attendance is not None:
        played = sorted(report.sessions_played.values())
        print(f"{report.attendance.details()} | sessions played {len(played)}"
              + (f" (t={played[0]:.0f}s to t={played[-1]:.0f}s after the app started)" if played else "")
              + (f" | waited {report.attendance_wait:.1f}s for attendance after the rest had settled"
                 if report.attendance_wait is not None else ""))
    print("tenants: " + " ".join(f"{tenant}={count}" for tenant, count in sorted(report.ready_by_tenant.items()))
          + " (join-urls results by their tenantId)")
    print(f"faults: {report.realised_mix()}")
    if report.notifications:
        print("notifications: " + " ".join(f"{k}={v}" for k, v in sorted(report.notifications.items())))
        if report.notifications.get("resync_missing"):
            print(f"NOTE {report.notifications['resync_missing']} organizers' calendars completed no resync within "
                  f"{RESYNC_PATIENCE_SECONDS:.0f}s of the calm (each round failed on one of its Graph reads)")
    print(accounts.organizers_line())
    print(accounts.token_line())
    print(accounts.graph_line())
    print(f"instances: {report.options.disruptions.instances}, {report.harness_runs} harness processes in all")
    for disruption in report.disruptions:
        print(f"disruption: {disruption.describe()}")
    print(f"wall time: {report.wall_seconds:.1f}s")
    for problem in [*ledger.problems(), *(report.attendance.problems() if report.attendance else []),
                    *(report.organizer.problems() if report.organizer else [])]:
        print(f"PROBLEM {problem}")
    if accounts.duplicate_deliveries:
        print(f"PROBLEM duplicate_deliveries (no kill explains them): "
              f"{', '.join(accounts.duplicate_deliveries[:5])}")
    if accounts.wrongly_disconnected:
        print(f"PROBLEM wrongly_disconnected (no grant was revoked): {', '.join(accounts.wrongly_disconnected)}")
    if not report.completed:
        print(f"PROBLEM the queues did not settle within {report.options.timeout:.0f}s")
    if report.ok:
        print("OK: nothing lost, every event in exactly one place, no webhook sent twice, nobody disconnected"
              + (", every ended appointment told as played" if report.attendance else "")
              + (", every organizer edit told once and every record as its calendar event" if report.organizer
                 else ""))
    else:
        logs = ", ".join(str(p) for p in report.harness_logs)
        print(f"FAILED (stack state and harness logs kept: {logs})")


def main(argv: list[str] | None = None) -> int:
    """`python -m chaos`."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--events", type=int, default=None, help="distinct events (default 2000; --heavy 10000)")
    parser.add_argument("--ended", type=int, default=None,
                        help="appointments among them that end during the run, their attendance told "
                             "(default 40; --heavy 100; 0 for none)")
    parser.add_argument("--meeting-kind", choices=("calendar", "standalone"), default="calendar",
                        help="calendar (default): the app puts appointments on the organizers' calendars, the staff "
                             "member edits some in Outlook, Graph's notifications come back under faults; "
                             "standalone: createOrGet meetings, no organizer side")
    parser.add_argument("--organizer-edits", type=int, default=None,
                        help="calendar: appointments whose event the staff member edits (default 40; --heavy 150)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--instances", type=int, default=3, help="app instances on one storage account")
    parser.add_argument("--kills", type=int, default=None, help="kill -9 of an instance mid-run (default 2)")
    parser.add_argument("--storage-pause", type=float, default=None,
                        help="seconds Azurite is stopped mid-run, 0 for none (default 5)")
    parser.add_argument("--refresh-kills", default=None,
                        help="comma-separated stages of a kill inside a token refresh: before, between, after; "
                             "'none' for none (default between)")
    parser.add_argument("--heavy", action="store_true",
                        help="10,000 events, 6 kills, a 20 s storage pause, a refresh kill at every stage")
    parser.add_argument("--token-lifetime", type=int, default=TOKEN_LIFETIME_SECONDS,
                        help="access-token lifetime in seconds (the app refreshes 300 s before expiry)")
    parser.add_argument("--rotation", choices=("entra", "strict"), default="entra",
                        help="the Entra emulator's refresh-token rotation (default entra: a used token stays valid)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the queues to settle (default 900; --heavy 2400)")
    parser.add_argument("--state-dir", type=Path, help="where the stack lives (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the ledger and fault figures as JSON here")
    args = parser.parse_args(argv)
    base: dict[str, Any] = dict(HEAVY) if args.heavy else {"events": 2000, "kills": 2, "storage_pause": 5.0,
                                                            "refresh_kills": ("between",), "timeout": 900.0,
                                                            "ended": 40, "organizer_edits": 40}
    if args.refresh_kills is not None:
        base["refresh_kills"] = tuple(s for s in args.refresh_kills.split(",") if s and s != "none")
    for name in ("events", "ended", "kills", "storage_pause", "timeout", "organizer_edits"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    disruptions = Disruptions(instances=args.instances, kills=base["kills"], storage_pause=base["storage_pause"],
                              refresh_kills=base["refresh_kills"])
    options = RunOptions(events=base["events"], ended=base["ended"], meeting_kind=args.meeting_kind,
                         organizer_edits=base["organizer_edits"], seed=args.seed, disruptions=disruptions,
                         token_lifetime=args.token_lifetime, rotation=args.rotation, timeout=base["timeout"],
                         state_dir=args.state_dir)
    report = asyncio.run(run(options))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps({
            "ledger": report.ledger.to_dict(), "targets": report.targets(), "wall_seconds": report.wall_seconds,
            "attendance": report.attendance.to_dict() if report.attendance else None,
            "organizer": report.organizer.to_dict() if report.organizer else None,
            "notifications": report.notifications,
            "graph_stats": report.graph_stats, "receiver": report.receiver_stats,
            "disruptions": [asdict(d) for d in report.disruptions], "mix": asdict(options.mix),
            "realised": report.realised_mix(), "organizers": report.accounts.organizer_status,
            "token_requests": report.accounts.token_requests, "graph_surplus": report.accounts.graph_surplus},
            indent=2))
    return 0 if report.ok else 1
