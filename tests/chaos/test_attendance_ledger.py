"""The attendance half of the ledger: every ended appointment told once, as played, a cancelled one never (no I/O:
synthetic deliveries and queue contents)."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chaos.accounts import Accounts, attendance_reads
from chaos.ledger import QueueSnapshot, attendance_ledger, compute_ledger
from chaos.organizer import move_ended
from chaos.runner import RunOptions, RunReport
from chaos.workload import (
    CLIENT_SECONDS,
    ORGANIZER_SECONDS,
    SCENARIOS,
    EndedAppointment,
    attendance_webhook_id,
    build_workload,
)
from shared.attendance.check import plan_check
from shared.attendance.classify import ATTENDED, UNAVAILABLE, classify
from shared.common.clock import format_timestamp, parse_timestamp
from shared.common.vocabulary import WebhookType
from shared.webhooks.outbound import webhook_id_for
from tests.chaos.test_ledger import balanced

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
CHANGED_AT, CHECKED_AT = format_timestamp(NOW + timedelta(seconds=2)), format_timestamp(NOW + timedelta(seconds=80))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def workload():
    return build_workload(400, seed=11, lifecycle=0.15, ended=40, now=NOW)


def told(appointment: EndedAppointment, outcome: str | None = None, reason: str | None = None,
         webhook_id: str | None = None, checked_at: str = CHECKED_AT) -> dict[str, Any]:
    """The receiver's delivery of the attendance the app would tell for what was played."""
    outcome = outcome or appointment.expected or ATTENDED
    played = appointment.scenario if outcome == appointment.expected else "attended"
    organizer = {"secondsPresent": ORGANIZER_SECONDS} if played in ("attended", "client_no_show") else None
    clients = [{"email": appointment.client_email, "secondsPresent": CLIENT_SECONDS}] \
        if played in ("attended", "staff_no_show") else []
    data = {"appointmentId": appointment.appointment_id, "endDateTime": appointment.end, "outcome": outcome,
            "reason": reason or ("no_attendance_report" if outcome == UNAVAILABLE else None),
            "organizerAttendance": organizer, "clients": clients,
            "sessions": 0 if outcome == UNAVAILABLE else 1, "checkedAt": checked_at}
    return {"webhook_id": webhook_id or appointment.webhook_id, "type": "appointment.attendance", "status": 200,
            "verified": True, "body": {"type": "appointment.attendance", "data": data}}


def result(event_id: str, at: str = CHANGED_AT) -> str:
    return b64(json.dumps({"eventId": event_id, "resolvedAt": at}))


def perfect(workload) -> QueueSnapshot:
    """Every change applied at once, every attendance told a minute later, as played."""
    snap = QueueSnapshot(join_urls=[result(a.change_event_id) for a in workload.ended if a.change_event_id])
    for appointment in workload.ended:
        if appointment.expected is not None:
            delivery = told(appointment)
            snap.deliveries.append(delivery)
            snap.attendance.append(b64(json.dumps(delivery["body"]["data"])))
    return snap


def test_the_workload_ends_appointments_of_every_kind(workload):
    ended = workload.ended
    assert len(ended) == 40 and {a.scenario for a in ended} == set(SCENARIOS)
    assert {a.change for a in ended} == {"none", "rescheduled", "cancelled"}
    # Their events count among the 400 and are sent first, creates before changes
    assert len(workload.events) == 400 and len({e.key for e in workload.events}) == 400
    kinds = [json.loads(text)["type"] for text, _ in workload.early]
    assert kinds == sorted(kinds, key=lambda k: k != "appointment.created")
    # A reschedule moves the end and names the clients again (the event that plans the check names them)
    moved = next(a for a in ended if a.change == "rescheduled")
    docs = [json.loads(t) for t, _ in workload.early if moved.appointment_id in t]
    assert {d["endDateTime"] for d in docs} == {moved.first_end, moved.end} and moved.end > moved.first_end
    assert all("clients" in d for d in docs)
    # Ended appointments end after now; the other lifecycle appointments lie far ahead (their checks hide)
    assert all(a.ends_at > NOW for a in ended)
    later = [json.loads(e.text) for e in workload.events if e.kind == "lifecycle" and "-ended-" not in e.key]
    assert all(d["endDateTime"] > format_timestamp(NOW + timedelta(days=8)) for d in later if "endDateTime" in d)


def test_the_expected_webhook_id_is_the_app_s(workload):
    moved = next(a for a in workload.ended if a.change == "rescheduled")
    docs = [json.loads(t) for t, _ in workload.early if moved.appointment_id in t]
    rescheduled = next(d for d in docs if d["type"] == "appointment.rescheduled")
    # As the processor plans the check of the reschedule: its end as the record keeps it
    check = plan_check(appointment_id=rescheduled["appointmentId"], organizer=rescheduled["organizer"],
                       online_meeting_id="m1", start=rescheduled["startDateTime"],
                       end=format_timestamp(parse_timestamp(rescheduled["endDateTime"])), grace_minutes=0.2)
    assert check is not None
    assert moved.webhook_id == webhook_id_for(check.identity, "attendance")


def test_each_scenario_s_session_classifies_as_expected():
    # The played sessions, run through the app's own classifier as the emulator's records
    for n, scenario in enumerate(SCENARIOS):
        appointment = EndedAppointment(f"apt-{n}", "scheduler@contoso.test", "pat@example.org", scenario, "none",
                                       "2026-12-07T01:30:00.000Z", "2026-12-07T02:00:40.000Z",
                                       "2026-12-07T02:00:40.000Z")
        body = appointment.session()
        if scenario == "no_session":
            assert body is None
            continue
        assert body is not None
        if scenario == "report_late":
            assert body["end"] > "2026-12-08"  # the session runs on: no report within the wait
            continue
        records = [{"role": a["role"], "emailAddress": a.get("email") or (a.get("user") if "user" in a else None),
                    "identity": {"id": None}, "attendanceIntervals": [
                        {"joinDateTime": body["start"], "leaveDateTime": body["start"],
                         "durationInSeconds": a["seconds"]}]} for a in body["attendees"]]
        check = plan_check(appointment_id=appointment.appointment_id, organizer=appointment.organizer,
                           online_meeting_id="m", start=appointment.start, end=appointment.end, grace_minutes=0,
                           client_emails=("pat@example.org",))
        assert check is not None
        assert classify(check, [records])["outcome"] == appointment.expected, scenario


def test_a_perfect_run_tells_each_ended_appointment_once_and_the_main_ledger_ignores_those_webhooks(workload):
    snap = perfect(workload)
    ledger = attendance_ledger(workload.ended, snap)
    assert ledger.ok, ledger.problems()
    expected = Counter(a.expected for a in workload.ended if a.expected is not None)
    assert ledger.outcomes == expected and ledger.cancelled == sum(a.change == "cancelled" for a in workload.ended)
    assert ledger.line().endswith("attendance_wrong=0 attendance_missing=0")
    assert f"ended=40 cancelled={ledger.cancelled} attended={expected['attended']} " in ledger.line()
    # The attendance webhook-ids name no event: the event ledger leaves them to this one
    assert compute_ledger(workload.events, snap).unknown == []


def test_copies_of_one_webhook_id_are_one_webhook_and_a_second_id_is_a_duplicate(workload):
    snap = perfect(workload)
    first = next(a for a in workload.ended if a.expected is not None)
    snap.deliveries.append(told(first))  # the same id again: one webhook
    assert attendance_ledger(workload.ended, snap).ok
    snap.deliveries.append(told(first, webhook_id="att_other_attendance"))
    ledger = attendance_ledger(workload.ended, snap)
    assert len(ledger.second_ids) == 1 and not ledger.ok
    assert ledger.wrong == [f"{first.appointment_id}(told for another end: att_other_attendance)"]


def test_a_missing_webhook_a_wrong_outcome_and_a_cancelled_one_told_are_caught(workload):
    snap = perfect(workload)
    owed = [a for a in workload.ended if a.expected is not None]
    attended = next(a for a in owed if a.expected == ATTENDED)
    cancelled = next(a for a in workload.ended if a.expected is None)
    snap.deliveries = [d for d in snap.deliveries if d["body"]["data"]["appointmentId"] != owed[0].appointment_id]
    snap.deliveries = [told(attended, outcome="client_no_show") if d["webhook_id"] == attended.webhook_id else d
                       for d in snap.deliveries]
    snap.deliveries.append(told(cancelled, outcome=ATTENDED))
    ledger = attendance_ledger(workload.ended, snap)
    assert ledger.missing == [owed[0].appointment_id]
    assert any(w.startswith(f"{attended.appointment_id}(client_no_show, played attended") for w in ledger.wrong)
    assert any(w.startswith(f"{cancelled.appointment_id}(cancelled") for w in ledger.wrong)


def test_a_played_session_may_end_unavailable_for_a_fault_only(workload):
    played = next(a for a in workload.ended if a.expected == ATTENDED)
    for reason, fine in (("throttled", True), ("graph_timeout", True), ("no_attendance_report", False),
                         ("missing_scope", False)):
        snap = perfect(workload)
        snap.deliveries = [told(played, outcome=UNAVAILABLE, reason=reason)
                           if d["webhook_id"] == played.webhook_id else d for d in snap.deliveries]
        snap.attendance = [b64(json.dumps(d["body"]["data"])) for d in snap.deliveries]
        ledger = attendance_ledger(workload.ended, snap)
        assert ledger.ok is fine, (reason, ledger.problems())
        assert ledger.unavailable_after_faults == ([f"{played.appointment_id}({reason})"] if fine else
                                                   ledger.unavailable_after_faults)


def test_wrong_times_present_and_a_parked_check_are_caught(workload):
    snap = perfect(workload)
    played = next(a for a in workload.ended if a.expected == ATTENDED)
    for d in snap.deliveries:
        if d["webhook_id"] == played.webhook_id:
            d["body"]["data"]["organizerAttendance"] = {"secondsPresent": 60}
    snap.attendance_poison.append("a check")
    ledger = attendance_ledger(workload.ended, snap)
    assert ledger.wrong == [f"{played.appointment_id}(organizer present 60 s, played {ORGANIZER_SECONDS} s)"]
    assert ledger.poison == 1 and not ledger.ok


def test_attendance_reads_count_each_told_end_once():
    records = [{"appointmentId": "a", "endDateTime": "e1", "sessions": 1, "reason": None},
               {"appointmentId": "a", "endDateTime": "e1", "sessions": 1, "reason": None},  # told again
               {"appointmentId": "b", "endDateTime": "e2", "sessions": 0, "reason": "no_attendance_report"}]
    assert attendance_reads(b64(json.dumps(r)) for r in records) == 2 + 2


def test_a_change_applied_after_the_attendance_was_told_leaves_that_attendance_standing(workload):
    # GIVEN a cancel and a reschedule that faults delayed until after their appointment's first check had told
    cancelled = next(a for a in workload.ended if a.change == "cancelled")
    moved = next(a for a in workload.ended if a.change == "rescheduled")
    snap = perfect(workload)
    late, earlier = format_timestamp(NOW + timedelta(seconds=60)), format_timestamp(NOW + timedelta(seconds=50))
    others = [result(str(a.change_event_id)) for a in workload.ended
              if a.change_event_id and a not in (cancelled, moved)]
    snap.join_urls = [*others, *(result(str(e), late) for e in (cancelled.change_event_id, moved.change_event_id))]
    early_cancelled = told(cancelled, outcome=ATTENDED, checked_at=earlier)
    early_moved = told(moved, webhook_id=attendance_webhook_id(moved.appointment_id, moved.first_end),
                       checked_at=earlier)
    snap.deliveries += [early_cancelled, early_moved]
    snap.attendance += [b64(json.dumps(d["body"]["data"])) for d in (early_cancelled, early_moved)]
    # THEN both stand (told for the appointment as it then was), and the moved one is still owed its new end's
    ledger = attendance_ledger(workload.ended, snap)
    assert ledger.ok, ledger.problems()
    assert sorted(ledger.told_before_change) == sorted([cancelled.appointment_id, moved.appointment_id])
    # WHEN the cancel had been applied before the check told
    snap.join_urls = [*others, result(str(cancelled.change_event_id)), result(str(moved.change_event_id), late)]
    ledger = attendance_ledger(workload.ended, snap)
    # THEN that one is wrong, and a reschedule applied first makes a first-end webhook a wrong one too
    assert ledger.wrong == [f"{cancelled.appointment_id}(cancelled, told ['attended'])"]
    snap.join_urls = [*others, result(str(cancelled.change_event_id)), result(str(moved.change_event_id))]
    snap.deliveries.remove(early_cancelled)
    snap.attendance = [b64(json.dumps(d["body"]["data"])) for d in snap.deliveries]
    ledger = attendance_ledger(workload.ended, snap)
    assert len(ledger.second_ids) == 1 and ledger.wrong[0].startswith(f"{moved.appointment_id}(told for another end")


def test_a_move_in_outlook_played_after_the_attendance_was_told_owes_no_second_one(workload):
    # GIVEN an ended appointment told for its first end, and then moved by the staff member in Outlook
    ended, _ = move_ended(workload.ended)
    moved = next(a for a in ended if a.change == "organizer_moved")
    snap = perfect(dataclasses.replace(workload, ended=ended))
    snap.deliveries = [d for d in snap.deliveries if d["body"]["data"]["appointmentId"] != moved.appointment_id]
    early = told(moved, webhook_id=attendance_webhook_id(moved.appointment_id, moved.first_end),
                 checked_at=format_timestamp(NOW + timedelta(seconds=50)))
    move_told = {"webhook_id": "m", "type": WebhookType.RESCHEDULED_BY_ORGANIZER, "status": 200, "verified": True,
                 "body": {"data": {"appointmentId": moved.appointment_id,
                                   "resolvedAt": format_timestamp(NOW + timedelta(seconds=60))}}}
    snap.deliveries += [early, move_told]
    snap.attendance = [b64(json.dumps(d["body"]["data"])) for d in snap.deliveries if "outcome" in d["body"]["data"]]
    # WHEN the move was played after the attendance was told, THEN nothing more is owed
    after = {moved.appointment_id: format_timestamp(NOW + timedelta(seconds=55))}
    ledger = attendance_ledger(ended, snap, moved_at=after)
    assert ledger.ok and ledger.told_before_change == [moved.appointment_id], ledger.problems()
    # AND when it was played before, the new end's attendance is owed
    before = {moved.appointment_id: format_timestamp(NOW + timedelta(seconds=40))}
    assert attendance_ledger(ended, snap, moved_at=before).missing == [moved.appointment_id]


def test_no_report_for_a_session_the_runner_played_after_the_check_looked_is_its_lag_not_the_app_s(workload):
    played = next(a for a in workload.ended if a.expected == ATTENDED)
    snap = perfect(workload)
    snap.deliveries = [told(played, outcome=UNAVAILABLE, reason="no_attendance_report")
                       if d["webhook_id"] == played.webhook_id else d for d in snap.deliveries]
    snap.attendance = [b64(json.dumps(d["body"]["data"])) for d in snap.deliveries]
    after = {played.appointment_id: format_timestamp(NOW + timedelta(seconds=81))}
    ledger = attendance_ledger(workload.ended, snap, after)
    assert ledger.ok and ledger.session_after_check == [played.appointment_id], ledger.problems()
    before = {played.appointment_id: format_timestamp(NOW + timedelta(seconds=10))}
    assert not attendance_ledger(workload.ended, snap, before).ok


def test_the_targets_fold_in_the_attendance(workload):
    snap = perfect(workload)
    owed = [a for a in workload.ended if a.expected is not None]
    snap.deliveries = [d for d in snap.deliveries if d["body"]["data"]["appointmentId"] != owed[0].appointment_id]
    snap.deliveries.append(told(owed[1], webhook_id="att_second_attendance"))
    accounts = Accounts(organizer_status={}, wrongly_disconnected=[], token_requests={}, token_lifetime=330,
                        run_seconds=1.0, graph_calls=0, graph_needed=0, graph_surplus={}, duplicate_deliveries=[],
                        redelivered_after_kill=[], instances=1)
    report = RunReport(options=RunOptions(), ledger=compute_ledger(workload.events, balanced(workload)),
                       wall_seconds=1.0, messages_sent=0, duplicates_sent=0, malformed_sent=0, graph_stats={},
                       receiver_stats={}, harness_runs=1, disruptions=[], harness_logs=[], completed=True,
                       accounts=accounts, attendance=attendance_ledger(workload.ended, snap))
    # The untold appointment is lost, the second webhook-id a duplicate delivery, and that webhook is wrong
    assert report.targets() == "lost=1 duplicate_deliveries=1 wrongly_disconnected=0 attendance_wrong=1"
    assert not report.ok
