"""The staff member's side of a calendar-backed chaos run (MEETING_KIND=calendar): their edits in Outlook, the
notification route Graph posts to, and the notification faults.

- Planned organizer edits (move, cancel, delete; some appointments get a move and then a cancel) on a share of
  the appointments the app puts on the calendar, played by the runner through the Graph emulator's
  `POST /_admin/events/{id}/organizer-edit` once the event is on the calendar (found through `GET
  /_admin/events` by the app's extended property), while the scheduler's own reschedules and cancels of the same
  and of other appointments are still on their way.
- A small front door (`NotificationFront`): the fleet's instances each serve HTTP on their own port, and the
  front spreads Graph's POSTs over the live ones as a platform's load balancer does; a POST in flight on an
  instance that is killed fails, and Graph retries it.
- The notification faults, set on the emulator (`PUT /_admin/subscriptions/faults`) for the whole run
  (duplicates, reordering, delays) and fired as disruptions (notifications dropped with `missed`, a slow
  validation, a `subscriptionRemoved`, a `reauthorizationRequired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx
from aiohttp import web

from chaos.workload import LIFECYCLE_DAY
from shared.common.clock import format_timestamp
from shared.graph.calendar import APPOINTMENT_PROPERTY

MOVE, CANCEL, DELETE = "move", "cancel", "delete"
# The emulator's delivery timings, scaled down as the attendance grace is: a failed POST is retried after 1 s,
# backing off to 8 s, for up to 5 minutes (Graph: 4 hours) before it is dropped with a `missed`. A slow endpoint
# is throttled for 20 s (Graph: 10 minutes).
SUBSCRIPTION_CONFIG = {"batch_window_seconds": 0.1, "retry_initial_seconds": 1.0, "retry_max_interval_seconds": 8.0,
                       "retry_for_seconds": 300.0, "throttle_delay_seconds": 20.0, "throttle_window_seconds": 60.0}
# How long a lifecycle fault waits for a subscription to play on.
SUBSCRIPTION_PATIENCE = 60.0
# For the whole run: a tenth of the change notifications delivered twice, each delayed up to 1.5 s and batches
# shuffled (so they arrive out of order).
RUN_FAULTS = {"duplicate_rate": 0.1, "delay_ms": 1500.0, "reorder": True}
# The organizer's moves: a month after the scheduler's days, so the ledger can tell whose write an event holds.
MOVES_FROM = LIFECYCLE_DAY + timedelta(days=31, hours=8)
# The app's timer every 5 s (a subscription made soon after the start, renewals, answers to lifecycle events), and
# a resync of each calendar every minute (the app's repair for what notifications miss, scaled down from 6 hours;
# the run ends only after one round once all is calm, so this is also what the end waits for at most).
CALENDAR_SETTINGS = {"MEETING_KIND": "calendar", "CALENDAR_SYNC_SCHEDULE": "*/5 * * * * *",
                     "CALENDAR_RESYNC_HOURS": str(60 / 3600)}
# The notification disruptions, by share of terminal messages (apart from the kills and the pause).
NOTIFICATION_STEPS = ((0.15, "notify:drop"), (0.35, "notify:removed"), (0.55, "notify:validation"),
                      (0.75, "notify:reauthorize"))


@dataclass(frozen=True)
class Edit:
    """One thing the staff member does to an appointment's event in Outlook, `delay` seconds after the last."""

    kind: str  # MOVE, CANCEL or DELETE
    delay: float
    start: str | None = None
    end: str | None = None
    subject: str | None = None

    def body(self) -> dict[str, Any]:
        """The body of `POST /_admin/events/{id}/organizer-edit`."""
        if self.kind == MOVE:
            return {"start": (self.start or "").rstrip("Z"), "end": (self.end or "").rstrip("Z"),
                    "subject": self.subject}
        return {"cancel": True, "comment": "Cancelled in Outlook"} if self.kind == CANCEL else {"delete": True}


@dataclass(frozen=True)
class OrganizerPlan:
    """The edits one appointment's event gets, in order."""

    appointment_id: str
    edits: tuple[Edit, ...]


@dataclass
class PlayedEdit:
    """An edit as the runner played it: the emulator's answer (200: applied; 404/400: the event was gone or
    cancelled already, so the edit never happened) and when."""

    appointment_id: str
    edit: Edit
    status: int
    at: str  # wall clock, ISO

    @property
    def applied(self) -> bool:
        return self.status == 200


def plan_edits(appointments: Iterable[str], count: int, seed: int) -> list[OrganizerPlan]:
    """`count` of the appointments get edits: half a move, a fifth a cancel, a tenth a delete, a fifth a move then
    a cancel. Each move goes to its own time (from MOVES_FROM, apart from every time the scheduler sends), with a new
    subject, so the ledger can tell whose write an event holds."""
    rng = random.Random(seed * 104729 + 3)  # noqa: S311 - a repeatable workload, not a secret
    chosen = rng.sample(sorted(appointments), min(count, len(list(appointments))))
    plans = []
    for n, appointment in enumerate(chosen):
        start = MOVES_FROM + timedelta(hours=n)
        move = Edit(MOVE, rng.uniform(0.0, 20.0), format_timestamp(start),
                    format_timestamp(start + timedelta(minutes=40)), f"Moved in Outlook {n}")
        shape = rng.choices(("move", "cancel", "delete", "move+cancel"), weights=(5, 2, 1, 2))[0]
        edits = {"move": (move,), "cancel": (Edit(CANCEL, move.delay),), "delete": (Edit(DELETE, move.delay),),
                 "move+cancel": (move, Edit(CANCEL, rng.uniform(0.0, 10.0)))}[shape]
        plans.append(OrganizerPlan(appointment, edits))
    return plans


def appointment_of(event: dict[str, Any]) -> str | None:
    """The appointment id on an event of the emulator's admin listing (the app's extended property)."""
    for prop in event.get("singleValueExtendedProperties") or ():
        if str(prop.get("id", "")).lower() == APPOINTMENT_PROPERTY.lower():
            return str(prop.get("value"))
    return None


def events_by_appointment(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The emulator's events grouped by the appointment they carry (events without the property left out)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        appointment = appointment_of(event)
        if appointment is not None:
            grouped.setdefault(appointment, []).append(event)
    return grouped


async def play_edits(graph_admin: httpx.AsyncClient, plans: list[OrganizerPlan], played: list[PlayedEdit],
                     until: float, fed: Callable[[], bool] = lambda: False,
                     booked: Callable[[str], Awaitable[bool]] | None = None) -> None:
    """Play each plan's edits once its appointment's event is on the calendar and the app has booked it (`booked`:
    its record is no longer pending, so the scheduler has its link), polled every second. The staff member acts
    on an appointment they see booked; under the run's faults an app's create can take a minute of retries.

    Once `fed()` (every message sent and handled), an appointment whose event never came (its create ended
    in poison or was rejected) gets none of its edits: each is recorded as not played (status 0)."""
    first_seen: dict[str, float] = {}
    progress = {plan.appointment_id: 0 for plan in plans}
    last_at: dict[str, float] = {}
    by_id = {plan.appointment_id: plan for plan in plans}
    while progress and time.monotonic() < until:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            events = events_by_appointment((await graph_admin.get("events")).json())
            now = time.monotonic()
            for appointment in list(progress):
                found = [e for e in events.get(appointment, ()) if e.get("folder") == "calendar"]
                if appointment not in first_seen and not (found and (booked is None or await booked(appointment))):
                    if fed():
                        played.extend(PlayedEdit(appointment, e, 0, datetime.now(UTC).isoformat())
                                      for e in by_id[appointment].edits[progress.pop(appointment):])
                    continue
                first_seen.setdefault(appointment, now)
                plan, step = by_id[appointment], progress[appointment]
                edit = plan.edits[step]
                if now < last_at.get(appointment, first_seen[appointment]) + edit.delay:
                    continue
                status = 404
                if found:
                    answer = await graph_admin.post(f"events/{quote(str(found[0]['id']), safe='')}/organizer-edit",
                                                    json=edit.body())
                    status = answer.status_code
                played.append(PlayedEdit(appointment, edit, status, datetime.now(UTC).isoformat()))
                last_at[appointment] = time.monotonic()
                progress[appointment] = step + 1
                if progress[appointment] >= len(plan.edits):
                    del progress[appointment]
        await asyncio.sleep(1.0)


class NotificationFront:
    """Graph's way in: one port that forwards each POST to a live instance, round robin (the platform's front end).

    A connection refused (the instance is dead) is tried on the next one; a request that was in flight when its
    instance died answers 502, and Graph retries it."""

    def __init__(self, ports: Callable[[], list[int]]) -> None:
        self._ports = ports
        self._turn = itertools.count()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.forwarded = 0
        self.failed = 0

    async def start(self, port: int) -> None:
        server = web.Application()
        server.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        ports = self._ports()
        start = next(self._turn)
        for k in range(len(ports)):
            port = ports[(start + k) % len(ports)]
            try:
                async with self._session.request(request.method, f"http://127.0.0.1:{port}{request.path_qs}",
                                                 data=body, headers={"Content-Type": request.content_type}) as r:
                    payload = await r.read()
                    self.forwarded += 1
                    return web.Response(status=r.status, body=payload,
                                        content_type=r.content_type if payload else None)
            except aiohttp.ClientConnectorError:
                continue  # nobody listening there (killed, or not started yet): the next instance
            except (TimeoutError, aiohttp.ClientError):
                break  # the instance died mid-request
        self.failed += 1
        return web.Response(status=502, text="no instance answered")


@dataclass
class NotificationDisrupter:
    """The notification faults fired mid-run against the emulator's subscriptions."""

    graph_admin: httpx.AsyncClient
    seed: int
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - a repeatable run

    async def _active(self) -> list[dict[str, Any]]:
        answer = await self.graph_admin.get("subscriptions", params={"state": "active"})
        return list(answer.json()["subscriptions"])

    async def _faults(self, **extra: Any) -> None:
        (await self.graph_admin.put("subscriptions/faults",
                                    json={**RUN_FAULTS, "seed": self.seed, **extra})).raise_for_status()

    async def run(self, action: str) -> str:
        """Carry out one `notify:*` step; what happened, for the disruption's record."""
        if action == "notify:drop":
            await self._faults(drop_next=5, missed_on_drop=True)
            return "the next 5 change notifications dropped, each followed by a `missed`"
        if action == "notify:validation":
            await self._faults(validation_timeout_next=1)
            return await self._lifecycle("subscriptionRemoved", "the next validation request times out; ")
        if action == "notify:removed":
            return await self._lifecycle("subscriptionRemoved")
        if action == "notify:reauthorize":
            return await self._lifecycle("reauthorizationRequired")
        raise ValueError(action)

    async def _lifecycle(self, event: str, prefix: str = "") -> str:
        # The timer makes the subscriptions; under Graph's faults (a 429's Retry-After reaches 30 s) its first round
        # can end late, and a lifecycle fault played before there is a subscription would test nothing.
        waited = 0.0
        active = await self._active()
        while not active and waited < SUBSCRIPTION_PATIENCE:
            await asyncio.sleep(0.5)
            waited += 0.5
            active = await self._active()
        if not active:
            return f"{prefix}no active subscription to send {event} for (waited {waited:.0f}s)"
        victim = self.rng.choice(sorted(active, key=lambda s: str(s["id"])))
        (await self.graph_admin.post(f"subscriptions/{victim['id']}/lifecycle",
                                     json={"event": event})).raise_for_status()
        return f"{prefix}{event} for the subscription of {str(victim.get('owner'))[:8]}…"


def move_ended(ended: list[Any], every: int = 6) -> tuple[list[Any], list[OrganizerPlan]]:
    """Every `every`-th ended appointment the scheduler leaves alone is moved by the staff member in Outlook as soon as
    it is on the calendar: a minute later, ending 15 s later (before its first end). Its attendance is owed for the
    new end. Returns the ended appointments (those moved changed to "organizer_moved") and their plans."""
    from dataclasses import replace

    from chaos.ledger import organizer_change_key

    out, plans = [], []
    untouched = [a for a in ended if a.change == "none"]
    moved = {a.appointment_id for a in untouched[::every]}
    for appointment in ended:
        if appointment.appointment_id not in moved:
            out.append(appointment)
            continue
        start = datetime.fromisoformat(appointment.start.replace("Z", "+00:00")) + timedelta(minutes=1)
        end = appointment.ends_at + timedelta(seconds=15)
        changed = replace(appointment, change="organizer_moved", start=format_timestamp(start),
                          end=format_timestamp(end), first_end=appointment.end,
                          change_event_id=organizer_change_key(appointment.appointment_id))
        out.append(changed)
        plans.append(OrganizerPlan(appointment.appointment_id, (
            Edit(MOVE, 0.0, changed.start, changed.end, f"Moved in Outlook {appointment.appointment_id}"),)))
    return out, plans
