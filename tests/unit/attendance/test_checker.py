"""The attendance check against an in-memory record store and a fake report source."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.attendance.check import AttendanceCheck, aware_time, plan_check
from shared.attendance.checker import MAX_HIDE_SECONDS, AttendanceChecker
from shared.common.vocabulary import AppointmentStatus, MeetingKind, WebhookType
from shared.exceptions import GraphUnavailableError, MissingScopeError
from shared.graph.calendar import CalendarEvent
from shared.storage.appointments import AppointmentRecord
from shared.testing.appointments import InMemoryAppointmentStore
from shared.testing.requeue import InMemoryRequeuer

SCHEDULED, CANCELLED = AppointmentStatus.SCHEDULED, AppointmentStatus.CANCELLED

END = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
ORGANIZER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"


class Sessions:
    def __init__(self, answers: list[Any]) -> None:
        self.answers, self.calls = answers, 0

    async def sessions(self, check: AttendanceCheck) -> list[list[dict[str, Any]]]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def record(end: datetime = END, status: str = SCHEDULED) -> AppointmentRecord:
    return AppointmentRecord("apt-1", ORGANIZER, status=status, online_meeting_id="m1",
                             start=(end - timedelta(minutes=30)).isoformat(), end=end.isoformat())


def check() -> AttendanceCheck:
    planned = plan_check(appointment_id="apt-1", organizer=ORGANIZER, online_meeting_id="m1",
                         start=(END - timedelta(minutes=30)).isoformat(), end=END.isoformat(), grace_minutes=10,
                         client_emails=("Pat@Example.org",))
    assert planned is not None
    return planned


def session(*records: dict[str, Any]) -> list[dict[str, Any]]:
    return list(records)


def person(seconds: int, *, role: str = "Attendee", email: str | None = None, oid: str | None = None) -> dict[str, Any]:
    join = END - timedelta(minutes=25)
    return {"role": role, "emailAddress": email, "identity": {"id": oid, "displayName": "x"},
            "attendanceIntervals": [{"joinDateTime": join.isoformat(),
                                     "leaveDateTime": (join + timedelta(seconds=seconds)).isoformat(),
                                     "durationInSeconds": seconds}]}


async def setup(now: datetime, answers: list[Any], stored: AppointmentRecord | None = None):
    store = InMemoryAppointmentStore()
    await store.insert(stored or record())
    requeuer = InMemoryRequeuer()
    sessions = Sessions(answers)
    return AttendanceChecker(store, sessions, requeuer, wait_hours=24, clock=lambda: now), requeuer, sessions


async def test_a_far_off_check_hides_for_at_most_seven_days():
    checker, requeuer, sessions = await setup(END - timedelta(days=30), [])
    outcome = await checker.run(check().to_json())
    assert outcome.kind == "waiting" and sessions.calls == 0
    assert requeuer.sent[0][1] == MAX_HIDE_SECONDS


@pytest.mark.parametrize("stored", [record(status=CANCELLED), record(end=END + timedelta(hours=1))])
async def test_a_cancel_or_a_reschedule_drops_the_check(stored):
    checker, requeuer, sessions = await setup(END + timedelta(hours=1), [], stored)
    assert (await checker.run(check().to_json())).kind == "dropped"
    assert requeuer.sent == [] and sessions.calls == 0


@pytest.mark.parametrize(("people", "outcome"), [
    ([person(600, role="Organizer"), person(500, email="pat@example.org")], "attended"),
    ([person(600, role="Organizer")], "client_no_show"),
    ([person(500)], "staff_no_show"),
    ([person(300, email="someone.else@example.org")], "nobody_joined"),
])
async def test_classified_once_and_a_duplicate_tells_the_same(people, outcome):
    checker, _, sessions = await setup(END + timedelta(minutes=11), [[session(*people)]])
    first = await checker.run(check().to_json())
    again = await checker.run(check().to_json())
    assert first.webhook is not None and again.webhook is not None
    assert json.loads(first.result or "")["outcome"] == outcome
    assert again.webhook.webhook_id == first.webhook.webhook_id and again.result == first.result
    assert sessions.calls == 1


async def test_no_report_is_retried_with_back_off_then_unavailable():
    checker, requeuer, _ = await setup(END + timedelta(minutes=11), [[]])
    assert (await checker.run(check().to_json())).kind == "waiting"
    retry = AttendanceCheck.from_json(requeuer.sent[0][0])
    assert retry.attempt == 1 and requeuer.sent[0][1] == 300
    late, _, _ = await setup(END + timedelta(hours=25), [[]])
    told = json.loads((await late.run(retry.to_json())).result or "")
    assert (told["outcome"], told["reason"]) == ("attendance_unavailable", "no_attendance_report")


async def test_a_missing_scope_is_told_for_attendance_alone():
    checker, _, _ = await setup(END + timedelta(minutes=11), [MissingScopeError("grant OnlineMeetingArtifact")])
    told = json.loads((await checker.run(check().to_json())).result or "")
    assert (told["outcome"], told["reason"]) == ("attendance_unavailable", "missing_scope")


async def test_graph_down_is_retried_not_told():
    checker, requeuer, _ = await setup(END + timedelta(minutes=11), [GraphUnavailableError("down", retry_after=900)])
    assert (await checker.run(check().to_json())).kind == "waiting"
    assert requeuer.sent[0][1] == 900


async def test_the_last_look_is_when_the_wait_ends_not_a_back_off_step_later():
    # GIVEN a check whose wait (24 h after due) ends in 100 s, with no report yet
    due = END + timedelta(minutes=10)
    checker, requeuer, _ = await setup(due + timedelta(hours=24) - timedelta(seconds=100), [[]])
    assert (await checker.run(check().again().again().again().to_json())).kind == "waiting"
    # THEN it looks again when the wait ends (100 s), not after the 8,100 s back-off step
    assert requeuer.sent[0][1] == 100


async def test_graph_s_retry_after_is_honoured_even_at_the_end_of_the_wait():
    due = END + timedelta(minutes=10)
    checker, requeuer, _ = await setup(due + timedelta(hours=24) - timedelta(seconds=5),
                                       [GraphUnavailableError("down", retry_after=30)])
    assert (await checker.run(check().to_json())).kind == "waiting"
    assert requeuer.sent[0][1] == 30


async def test_a_check_follows_the_end_the_organizer_moved_in_outlook_with_its_grace():
    # GIVEN the staff member moved the appointment in Outlook (calendar sync recorded it; nobody planned a check)
    moved_end = END + timedelta(hours=2)
    stored = dataclasses.replace(record(end=moved_end), last_event_type=WebhookType.RESCHEDULED_BY_ORGANIZER,
                     online_meeting_id="m2")
    checker, requeuer, sessions = await setup(END + timedelta(minutes=10), [], stored)
    # WHEN the check planned for the old end fires
    outcome = await checker.run(check().to_json())
    # THEN it hides again as the check of the new end (same grace, the record's meeting, the clients kept)
    assert outcome.kind == "waiting" and sessions.calls == 0
    again = AttendanceCheck.from_json(requeuer.sent[0][0])
    assert (again.end, again.online_meeting_id, again.client_emails) == (moved_end.isoformat(), "m2",
                                                                        ("pat@example.org",))
    assert aware_time(again.due) - aware_time(again.end) == timedelta(minutes=10)


async def test_a_scheduler_reschedule_still_drops_the_old_check():
    stored = dataclasses.replace(record(end=END + timedelta(hours=2)), last_event_type=WebhookType.UPDATED)
    checker, _, _ = await setup(END + timedelta(minutes=10), [], stored)
    assert (await checker.run(check().to_json())).kind == "dropped"


async def test_told_with_the_appointment_s_version_which_telling_does_not_change():
    stored = dataclasses.replace(record(), version=3)
    checker, _, _ = await setup(END + timedelta(minutes=11), [[session(person(600, role="Organizer"))]], stored)
    outcome = await checker.run(check().to_json())
    assert json.loads(outcome.result or "")["version"] == 3
    assert (await checker._store.get("apt-1")).version == 3


class Calendar:
    def __init__(self, event: Any) -> None:
        self.event, self.gets = event, 0

    async def get(self, organizer: str, event_id: str, *, tenant: str | None = None) -> Any:
        self.gets += 1
        if isinstance(self.event, Exception):
            raise self.event
        return self.event


def _on_calendar() -> AppointmentRecord:
    return dataclasses.replace(record(), meeting_kind=MeetingKind.CALENDAR, calendar_event_id="EV1")


def _event(end: datetime = END, cancelled: bool = False) -> CalendarEvent:
    return CalendarEvent("EV1", "https://teams/l/1", True, end - timedelta(minutes=30), end, "Consult", cancelled,
                         "apt-1")


@pytest.mark.parametrize("seen", [_event(END + timedelta(hours=1)), _event(cancelled=True), None])
async def test_a_check_waits_while_the_calendar_event_shows_a_change_its_record_has_not_had_yet(seen):
    # GIVEN a calendar-backed appointment whose event the staff member moved, cancelled or deleted in Outlook, and
    # the notification has not reached the record yet
    checker, requeuer, sessions = await setup(END + timedelta(minutes=11), [[session(person(600))]], _on_calendar())
    checker._calendar = calendar = Calendar(seen)
    # WHEN its check is due, THEN it tells nothing for the old times and looks again later (within the wait)
    outcome = await checker.run(check().to_json())
    assert outcome.kind == "waiting" and sessions.calls == 0 and calendar.gets == 1 and len(requeuer.sent) == 1


@pytest.mark.parametrize("seen", [_event(), GraphUnavailableError("503", reason="graph_unavailable")])
async def test_a_check_tells_when_the_event_agrees_or_cannot_be_looked_at(seen):
    checker, _, sessions = await setup(END + timedelta(minutes=11), [[session(person(600, role="Organizer"))]],
                                       _on_calendar())
    checker._calendar = Calendar(seen)
    assert (await checker.run(check().to_json())).kind == "told" and sessions.calls == 1


async def test_after_the_wait_the_record_is_told_even_if_the_event_still_differs():
    checker, _, _ = await setup(END + timedelta(minutes=10, hours=25), [[session(person(600, role="Organizer"))]],
                                _on_calendar())
    checker._calendar = Calendar(_event(END + timedelta(hours=1)))
    assert (await checker.run(check().to_json())).kind == "told"
