"""`python -m shared.diagnose --organizer UPN [--tenant T] [--settings local.settings.json]`: a self-test of
calendar-backed meetings against a real tenant, as a connected organizer.

Two behaviours the app relies on with MEETING_KIND=calendar are not documented by Microsoft: whether
getVirtualAppointmentJoinWebUrl works on a calendar event's meeting, and what becomes of the Teams meeting when
its event is cancelled. The local Graph emulator assumes the link works and the meeting stays; this command
checks both on the operator's tenant: it makes a calendar event with a Teams meeting (no attendees, an hour
from now tomorrow), resolves it, gets the virtual-appointment link, moves the event and checks the link held,
cancels it and checks the meeting, printing each step's answer. Links are printed shortened (they admit anyone
holding them).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from shared.exceptions import JoinLinkError
from shared.graph.meetings import MeetingSpec
from shared.organizers import settings_from
from shared.services import Services


def _short(url: str | None) -> str:
    return "-" if not url else url[:40] + "…"


class _Steps:
    """Runs and prints the steps; a failed step is printed with its reason and ends the run."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = False

    async def run(self, name: str, step: Callable[[], Awaitable[Any]]) -> Any:
        if self.failed:
            return None
        try:
            answer = await step()
        except JoinLinkError as exc:
            self.out.write(f"FAIL {name}: {getattr(exc, 'reason', type(exc).__name__)}: {exc}\n")
            self.failed = True
            return None
        return answer

    def say(self, name: str, text: str) -> None:
        self.out.write(f"ok   {name}: {text}\n")


async def run(services: Services, organizer: str, out: TextIO, tenant: str | None = None) -> int:
    """Every step against Graph as `organizer`; 0 when the two undocumented behaviours hold, 1 when either fails."""
    calendar, graph, steps = services.calendar, services.graph, _Steps(out)
    start = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    spec = MeetingSpec(start=start, end=start + timedelta(minutes=30), subject="va-join-links self-test")
    appointment = f"diagnose-{uuid.uuid4().hex[:12]}"
    made = await steps.run("create event", lambda: calendar.ensure(organizer, appointment, spec, tenant=tenant))
    if made is None:
        return 1
    steps.say("create event", f"event {made.event_id[:16]}…, isOnlineMeeting, joinUrl {_short(made.join_web_url)}")
    steps.say("resolve meeting", f"onlineMeetingId {made.id[:16]}… by $filter=JoinWebUrl")
    link = await steps.run("virtual-appointment link", lambda: graph.join_web_url(organizer, made.id, tenant=tenant))
    if link is not None:
        steps.say("virtual-appointment link", f"getVirtualAppointmentJoinWebUrl answered {_short(link)}")
    later = MeetingSpec(start=start + timedelta(hours=1), end=start + timedelta(hours=1, minutes=30))
    moved = await steps.run("move event", lambda: calendar.move(organizer, str(made.event_id), later,
                                                                made.join_web_url, tenant=tenant))
    if moved is not None:
        held = moved.join_web_url == made.join_web_url
        steps.say("move event", f"start {moved.start}; join URL {'held' if held else 'CHANGED'}")
        again = await steps.run("link after move", lambda: graph.join_web_url(organizer, made.id, tenant=tenant))
        if again is not None:
            steps.say("link after move", "same link" if again == link else "a DIFFERENT link")
    cancelled = await steps.run("cancel event", lambda: calendar.cancel(organizer, str(made.event_id),
                                                                        "self-test", tenant=tenant))
    if cancelled is not None:
        steps.say("cancel event", "202 (moved to Deleted Items)" if cancelled else "already gone")
        after = await steps.run("meeting after cancel",
                                lambda: graph.join_web_url(organizer, made.id, tenant=tenant))
        if after is not None:
            steps.say("meeting after cancel", "the Teams meeting still answers (as the emulator assumes)")
    return 1 if steps.failed else 0


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m shared.diagnose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--organizer", required=True, help="a connected organizer's UPN or object id")
    parser.add_argument("--tenant", help="the organizer's tenant (GUID), when they are connected in several")
    parser.add_argument("--settings", type=Path, help="a local.settings.json whose Values override the environment")
    args = parser.parse_args(argv)
    services = Services(settings_from(args.settings))

    async def go() -> int:
        try:
            return await run(services, args.organizer, out, args.tenant)
        finally:
            await services.aclose()

    return asyncio.run(go())


if __name__ == "__main__":
    raise SystemExit(main())
