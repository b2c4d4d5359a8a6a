"""The organizer half of a calendar-backed run's ledger: every edit in Outlook told once, nothing told that the
staff member did not do, every record as its calendar event (no I/O: synthetic edits, deliveries, records and
the emulator's events)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chaos.accounts import Accounts
from chaos.ledger import QueueSnapshot, compute_ledger
from chaos.organizer import CANCEL, DELETE, MOVE, MOVES_FROM, Edit, OrganizerPlan, PlayedEdit, move_ended, plan_edits
from chaos.organizer_ledger import organizer_ledger
from chaos.runner import RunOptions, RunReport
from chaos.workload import LIFECYCLE_DAY, build_workload
from shared.common.clock import format_timestamp
from shared.graph.calendar import APPOINTMENT_PROPERTY
from tests.chaos.test_ledger import balanced

pytestmark = pytest.mark.unit

JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0"
APP_TIMES = tuple(format_timestamp(LIFECYCLE_DAY + timedelta(hours=9, minutes=m)) for m in (0, 30))
MOVED = Edit(MOVE, 0.0, format_timestamp(MOVES_FROM), format_timestamp(MOVES_FROM + timedelta(minutes=40)),
             "Moved in Outlook 0")


def event(appointment: str, times: tuple[str, str] = APP_TIMES, subject: str = "Chaos 1", *,
          folder: str = "calendar", cancelled: bool = False, event_id: str = "evt-1") -> dict[str, Any]:
    """An event as GET /_admin/events lists it."""
    return {"id": event_id, "subject": subject, "isCancelled": cancelled, "folder": folder,
            "start": {"dateTime": times[0].rstrip("Z").replace(".000", ".0000000"), "timeZone": "UTC"},
            "end": {"dateTime": times[1].rstrip("Z").replace(".000", ".0000000"), "timeZone": "UTC"},
            "onlineMeeting": {"joinUrl": JOIN},
            "singleValueExtendedProperties": [{"id": APPOINTMENT_PROPERTY, "value": appointment}]}


def record(appointment: str, times: tuple[str, str] = APP_TIMES, subject: str = "Chaos 1",
           status: str = "scheduled") -> dict[str, Any]:
    """An appointment record's fields."""
    return {"appointment_id": appointment, "status": status, "start": times[0], "end": times[1],
            "subject": subject, "organizer_join_url": JOIN, "calendar_event_id": "evt-1", "meeting_kind": "calendar"}


def told(appointment: str, version: int, edit: Edit | None = None, webhook_id: str | None = None) -> dict[str, Any]:
    """The receiver's delivery of a _by_organizer webhook (a move's when `edit` is a move, else a cancel's)."""
    moved = edit is not None and edit.kind == MOVE
    kind = "appointment.rescheduled_by_organizer" if moved else "appointment.cancelled_by_organizer"
    data = {"appointmentId": appointment, "version": version, "status": "scheduled" if moved else "cancelled",
            "startDateTime": edit.start if moved and edit else None,
            "endDateTime": edit.end if moved and edit else None,
            "resolvedAt": "2026-12-07T02:00:00.000Z"}
    return {"webhook_id": webhook_id or f"evt_{appointment}_v{version}_{kind.split('.')[1]}", "type": kind,
            "status": 200, "verified": True, "body": {"type": kind, "data": data}}


def played(appointment: str, edit: Edit, status: int = 200) -> PlayedEdit:
    return PlayedEdit(appointment, edit, status, "2026-12-07T02:00:00+00:00")


def test_a_move_told_once_and_the_record_as_its_event_balances():
    ledger = organizer_ledger([played("a", MOVED)], [told("a", 2, MOVED), told("a", 2, MOVED)],
                              {"a": record("a", (MOVED.start, MOVED.end), MOVED.subject)},
                              [event("a", (MOVED.start, MOVED.end), MOVED.subject)])
    # Two copies of one webhook-id are one telling (their count is the run's duplicate_deliveries).
    assert ledger.ok, ledger.problems()
    assert (ledger.told, ledger.records, ledger.played[MOVE], ledger.diverged_count) == (1, 1, 1, 0)


def test_a_move_told_under_two_webhook_ids_is_a_second_telling():
    ledger = organizer_ledger([played("a", MOVED)], [told("a", 2, MOVED), told("a", 3, MOVED)],
                              {"a": record("a", (MOVED.start, MOVED.end), MOVED.subject)},
                              [event("a", (MOVED.start, MOVED.end), MOVED.subject)])
    assert len(ledger.second_ids) == 1 and not ledger.ok


def test_a_move_the_event_still_shows_and_never_told_is_lost():
    ledger = organizer_ledger([played("a", MOVED)], [], {"a": record("a", (MOVED.start, MOVED.end), MOVED.subject)},
                              [event("a", (MOVED.start, MOVED.end), MOVED.subject)])
    assert ledger.untold == [f"a(moved to {MOVED.start}, never told)"]


def test_a_move_the_scheduler_overwrote_is_owed_nothing_and_the_record_holds_the_schedulers_times():
    # The staff member moved it, the scheduler's reschedule PATCHed it back before the app read the event.
    ledger = organizer_ledger([played("a", MOVED)], [], {"a": record("a")}, [event("a")])
    assert ledger.ok, ledger.problems()


def test_the_apps_own_write_told_as_the_organizers_counts_as_diverged():
    own = Edit(MOVE, 0.0, *APP_TIMES)
    ledger = organizer_ledger([], [told("a", 2, own)], {"a": record("a")}, [event("a")])
    assert ledger.own_writes_told and ledger.diverged_count == 1
    cancelled = organizer_ledger([], [told("b", 3)], {"b": record("b", status="cancelled")},
                                 [event("b", folder="deletedItems", cancelled=True)])
    assert cancelled.own_writes_told and not cancelled.ok


@pytest.mark.parametrize("kind", [CANCEL, DELETE])
def test_a_cancel_or_delete_in_outlook_must_be_told_unless_the_scheduler_cancelled_too(kind):
    gone = event("a", folder="deletedItems", cancelled=kind == CANCEL)
    cancelled = {"a": record("a", status="cancelled")}
    assert organizer_ledger([played("a", Edit(kind, 0.0))], [told("a", 2)], cancelled, [gone]).ok
    untold = organizer_ledger([played("a", Edit(kind, 0.0))], [], cancelled, [gone])
    assert untold.untold == [f"a({kind} in Outlook never told)"]
    # Either side may have removed it first: then the organizer's cancel is owed nothing.
    assert organizer_ledger([played("a", Edit(kind, 0.0))], [], cancelled, [gone], {"a"}).ok


def test_records_that_disagree_with_their_events_diverge():
    records = {"times": record("times"), "subject": record("subject", subject="Old"),
               "alive": record("alive", status="cancelled"), "gone": record("gone"), "none": record("none"),
               "link": {**record("link"), "organizer_join_url": JOIN + "?other"}}
    events = [event("times", (MOVED.start, MOVED.end)), event("subject"), event("alive"),
              event("gone", folder="deletedItems"), event("link")]
    ledger = organizer_ledger([], [], records, events)
    assert sorted(d.split("(")[0] for d in ledger.diverged) == ["alive", "gone", "link", "none", "times"]
    assert "no event" in next(d for d in ledger.diverged if d.startswith("none"))
    # A rename in Outlook is reported, not judged; a cancel before the create made anything needs no event.
    assert [d.split("(")[0] for d in ledger.subject_apart] == ["subject"]
    tombstone = {"t": {**record("t", status="cancelled"), "calendar_event_id": None}}
    assert organizer_ledger([], [], tombstone, []).ok


def test_two_events_for_one_appointment_and_unfinished_or_standalone_records():
    records = {"a": record("a"), "p": {**record("p"), "status": "pending"},
               "s": {**record("s"), "meeting_kind": None}, "n": None}
    ledger = organizer_ledger([], [], records, [event("a"), event("a", event_id="evt-2"), event("p"),
                                                event("p", event_id="evt-3")])
    assert ledger.duplicate_events == ["a(2)", "p(2)"] and ledger.pending == 1 and ledger.records == 1
    assert not ledger.ok


def test_an_edit_the_event_was_gone_for_is_not_played_and_owed_nothing():
    ledger = organizer_ledger([played("a", MOVED, status=404)], [], {"a": record("a", status="cancelled")},
                              [event("a", folder="deletedItems", cancelled=True)])
    assert ledger.ok and ledger.played == {"not_played": 1}


def test_the_event_ledger_skips_the_organizer_webhooks():
    snapshot = QueueSnapshot(deliveries=[told("a", 2, MOVED), told("a", 3)])
    ledger = compute_ledger([], snapshot)
    assert not ledger.unknown and ledger.ok


def test_plans_cover_every_shape_and_moves_go_to_their_own_times():
    workload = build_workload(2000, seed=7, lifecycle=0.15)
    plans = plan_edits(workload.appointments, 40, seed=7)
    assert len(plans) == 40 and len({p.appointment_id for p in plans}) == 40
    shapes = {tuple(e.kind for e in p.edits) for p in plans}
    assert shapes == {(MOVE,), (CANCEL,), (DELETE,), (MOVE, CANCEL)}
    starts = [e.start for p in plans for e in p.edits if e.kind == MOVE]
    assert len(set(starts)) == len(starts) and all(s and s >= format_timestamp(MOVES_FROM) for s in starts)


def test_ended_appointments_moved_in_outlook_are_owed_attendance_for_their_new_end():
    now = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
    workload = build_workload(400, seed=11, lifecycle=0.15, ended=40, now=now)
    ended, plans = move_ended(workload.ended)
    moved = [a for a in ended if a.change == "organizer_moved"]
    assert moved and len(plans) == len(moved) and all(isinstance(p, OrganizerPlan) for p in plans)
    for appointment, plan in zip(moved, plans, strict=True):
        assert appointment.ends_at - datetime.fromisoformat(appointment.first_end.replace("Z", "+00:00")) \
            == timedelta(seconds=15)
        assert plan.edits[0].end == appointment.end and appointment.expected is not None
        assert appointment.change_event_id == f"organizer:{appointment.appointment_id}"


def test_the_targets_fold_in_the_organizer_side():
    workload = build_workload(400, seed=11, lifecycle=0.15)
    accounts = Accounts(organizer_status={}, wrongly_disconnected=[], token_requests={}, token_lifetime=330,
                        run_seconds=1.0, graph_calls=0, graph_needed=0, graph_surplus={}, duplicate_deliveries=[],
                        redelivered_after_kill=[], instances=1)
    # One move never told (lost), one told under two ids (a duplicate delivery), one record apart from its event and
    # an own write told as the organizer's (both diverged).
    edits = [played("a", MOVED), played("b", MOVED)]
    moved = (MOVED.start, MOVED.end)
    organizer = organizer_ledger(
        edits, [told("b", 2, MOVED), told("b", 3, MOVED), told("c", 2, Edit(MOVE, 0.0, *APP_TIMES))],
        {"a": record("a", moved, MOVED.subject), "b": record("b", moved, MOVED.subject), "c": record("c"),
         "d": record("d")},
        [event("a", moved, MOVED.subject), event("b", moved, MOVED.subject), event("c"), event("d", moved)])
    report = RunReport(options=RunOptions(), ledger=compute_ledger(workload.events, balanced(workload)),
                       wall_seconds=1.0, messages_sent=0, duplicates_sent=0, malformed_sent=0, graph_stats={},
                       receiver_stats={}, harness_runs=1, disruptions=[], harness_logs=[], completed=True,
                       accounts=accounts, organizer=organizer)
    assert report.targets() == "lost=1 duplicate_deliveries=1 wrongly_disconnected=0 attendance_wrong=0 diverged=2"
    assert not report.ok
