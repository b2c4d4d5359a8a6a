"""The ledger catches every way of losing or doubling an event (no I/O: synthetic queue contents)."""

from __future__ import annotations

import base64
import json

import pytest

from chaos.ledger import QueueSnapshot, compute_ledger
from chaos.workload import build_workload

pytestmark = pytest.mark.unit


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def balanced(workload):
    """The queues and deliveries of a perfect run."""
    snap = QueueSnapshot()
    for event in workload.events:
        if event.kind in ("valid", "lifecycle"):
            snap.join_urls.append(b64(json.dumps({"eventId": event.event_id, "appointmentId": event.appointment_id})))
        elif event.kind == "bad_base64":
            snap.poison.append(event.text)
        else:
            snap.rejected.append(b64(json.dumps({"reason": event.reason, "eventId": event.event_id,
                                                 "appointmentId": event.appointment_id, "dequeueCount": 1,
                                                 "originalMessage": event.text})))
        if event.webhook_id:
            snap.deliveries.append({"webhook_id": event.webhook_id, "status": 200, "verified": True})
    return snap


@pytest.fixture
def workload():
    return build_workload(200, seed=1)


def test_a_perfect_run_balances(workload):
    ledger = compute_ledger(workload.events, balanced(workload))
    assert ledger.ok and ledger.line().endswith("lost=0 orphan_meetings=0 duplicate_meetings=0")
    assert ledger.events == 200
    assert ledger.ready + ledger.rejected + ledger.poison == 200
    assert {e.kind for e in workload.events} >= {"valid", "not_json", "bad_base64", "missing_appointment_id"}
    assert workload.duplicates == 10 and workload.malformed == 10 and len(workload.messages) == 210


def test_a_missing_result_is_lost(workload):
    snap = balanced(workload)
    snap.join_urls.pop(0)
    ledger = compute_ledger(workload.events, snap)
    assert len(ledger.lost) == 1 and not ledger.ok


def test_an_event_in_two_places_and_a_requeued_copy_in_poison_are_caught(workload):
    snap = balanced(workload)
    valid = next(e for e in workload.events if e.kind == "valid")
    snap.poison.append(b64(json.dumps({"$requeue": {"attempt": 1}, "message": valid.text})))
    ledger = compute_ledger(workload.events, snap)
    assert ledger.conflicts == [f"{valid.key}(poison+ready)"] and not ledger.ok


def test_two_webhook_ids_for_one_event_and_duplicate_deliveries(workload):
    snap = balanced(workload)
    valid = next(e for e in workload.events if e.kind == "valid")
    snap.deliveries.append({"webhook_id": f"{valid.event_id}_failed", "status": 200, "verified": True})
    snap.deliveries.append({"webhook_id": valid.webhook_id, "status": 200, "verified": True})
    ledger = compute_ledger(workload.events, snap)
    assert len(ledger.two_webhook_ids) == 1 and ledger.duplicate_deliveries == 1 and not ledger.ok


def test_a_missing_webhook_a_stranger_and_a_late_rejection(workload):
    snap = balanced(workload)
    snap.deliveries = snap.deliveries[1:]
    snap.join_urls.append(b64(json.dumps({"eventId": "from-nowhere"})))
    rejected = json.loads(base64.b64decode(snap.rejected[0]))
    snap.rejected[0] = b64(json.dumps({**rejected, "dequeueCount": 3}))
    ledger = compute_ledger(workload.events, snap)
    assert len(ledger.webhook_lost) == 1 and ledger.unknown == ["join-urls:from-nowhere"]
    assert len(ledger.late_rejections) == 1
    # After a crash, a second delivery of a malformed message is legitimate: only the reason is checked then.
    assert compute_ledger(workload.events, snap, first_attempt=False).late_rejections == []


def meeting(appointment_id: str, n: int = 1) -> dict:
    from shared.graph.meetings import external_id

    return {"id": f"m-{appointment_id}-{n}", "externalId": external_id(appointment_id)}


def test_lifecycle_events_may_be_rejected_for_their_order_only_and_meetings_are_checked():
    # GIVEN a workload with lifecycle appointments, some cancelled
    workload = build_workload(200, seed=3, lifecycle=0.3)
    cancelled = [a for a, was in workload.appointments.items() if was]
    alive = [a for a, was in workload.appointments.items() if not was]
    assert workload.lifecycle >= 40 and cancelled and alive
    snap = balanced(workload)
    snap.meetings = [meeting(a) for a in alive]
    snap.deleted_meetings = [meeting(a) for a in cancelled]
    assert compute_ledger(workload.events, snap).ok
    # WHEN a cancelled appointment's meeting is still there, or one appointment got two meetings
    snap.deleted_meetings.remove(meeting(cancelled[0]))
    snap.meetings.append(meeting(cancelled[0]))
    snap.deleted_meetings.append(meeting(alive[0], 2))
    ledger = compute_ledger(workload.events, snap)
    # THEN the ledger says so
    assert not ledger.ok and len(ledger.orphan_meetings) == 1 and len(ledger.duplicate_meetings) == 1
    assert "orphan_meetings=1 duplicate_meetings=1" in ledger.line()


def test_a_lifecycle_rejection_with_another_reason_is_caught():
    workload = build_workload(100, seed=5, lifecycle=0.3)
    event = next(e for e in workload.events if e.kind == "lifecycle")
    snap = balanced(workload)
    snap.join_urls = [t for t in snap.join_urls if event.event_id not in base64.b64decode(t).decode()]
    snap.rejected.append(b64(json.dumps({"reason": "forbidden", "eventId": event.event_id, "dequeueCount": 1,
                                         "originalMessage": event.text})))
    snap.deliveries.append({"webhook_id": event.failed_webhook_id, "status": 200, "verified": True})
    snap.deliveries = [d for d in snap.deliveries if d["webhook_id"] != event.webhook_id]
    ledger = compute_ledger(workload.events, snap)
    assert ledger.late_rejections and not ledger.webhook_lost
