"""The Graph emulator's attendance reports answer as Graph v1.0 documents them (../shared/FACTS.md, "Attendance"):
a report per session once it has ended, the 50 most recent, records with role, e-mail and intervals, and
OnlineMeetingArtifact.Read.All required on the organizer's token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.devstack.test_graph_meeting_writes import GRAPH, SCHEDULER, WRITE, _tls, token

pytestmark = pytest.mark.e2e
ARTIFACTS = GRAPH + "OnlineMeetingArtifact.Read.All"


def _client(stack: dict[str, Any], scopes: str) -> httpx.Client:
    return httpx.Client(base_url=stack["graph"]["base_url"], verify=_tls(stack),
                        headers={"Authorization": f"Bearer {token(stack, SCHEDULER, scopes)}"})


@pytest.fixture
def meeting(stack: dict[str, Any]) -> Iterator[tuple[str, httpx.Client, httpx.Client]]:
    with _client(stack, WRITE) as writer, _client(stack, ARTIFACTS) as reader, \
            httpx.Client(base_url=stack["graph"]["admin_url"] + "/", verify=_tls(stack)) as admin:
        made = writer.post("/me/onlineMeetings/createOrGet", json={"externalId": uuid.uuid4().hex})
        yield made.json()["id"], reader, admin


def _iso(value: datetime) -> str:
    return value.isoformat()


def test_a_report_per_ended_session_with_its_records(meeting, stack):
    meeting_id, reader, admin = meeting
    start = datetime.now(UTC) - timedelta(hours=1)
    played = admin.post(f"meetings/{meeting_id}/sessions", json={"start": _iso(start), "attendees": [
        {"user": SCHEDULER["upn"], "role": "Organizer", "seconds": 1200},
        {"email": "pat@example.org", "displayName": "Pat", "intervals": [
            {"joinOffsetSeconds": 60, "seconds": 300}, {"joinOffsetSeconds": 600, "seconds": 120}]},
        {"displayName": "Guest"}]})
    assert played.status_code == 201
    # A session still running has no report yet
    admin.post(f"meetings/{meeting_id}/sessions", json={"start": _iso(datetime.now(UTC)), "attendees": [
        {"user": SCHEDULER["upn"], "role": "Organizer", "seconds": 3600}]})
    reports = reader.get(f"/me/onlineMeetings/{meeting_id}/attendanceReports").json()["value"]
    assert [r["id"] for r in reports] == [played.json()["id"]] and "attendanceRecords" not in reports[0]
    records = reader.get(f"/me/onlineMeetings/{meeting_id}/attendanceReports/{reports[0]['id']}/attendanceRecords")
    by_role = {(r["role"], r["emailAddress"]): r for r in records.json()["value"]}
    assert by_role[("Organizer", SCHEDULER["upn"])]["totalAttendanceInSeconds"] == 1200
    pat = by_role[("Attendee", "pat@example.org")]
    assert pat["totalAttendanceInSeconds"] == 420 and len(pat["attendanceIntervals"]) == 2
    assert ("Attendee", None) in by_role
    expanded = reader.get(f"/me/onlineMeetings/{meeting_id}/attendanceReports/{reports[0]['id']}",
                          params={"$expand": "attendanceRecords"}).json()
    assert len(expanded["attendanceRecords"]) == 3


def test_only_the_50_most_recent_and_only_with_the_artifact_scope(meeting, stack):
    meeting_id, reader, admin = meeting
    old = datetime.now(UTC) - timedelta(days=10)
    for n in range(52):
        admin.post(f"meetings/{meeting_id}/sessions", json={"start": _iso(old + timedelta(hours=n)), "attendees": [
            {"user": SCHEDULER["upn"], "role": "Organizer", "seconds": 60}]}).raise_for_status()
    reports = reader.get(f"/me/onlineMeetings/{meeting_id}/attendanceReports").json()["value"]
    assert len(reports) == 50 and min(r["meetingStartDateTime"] for r in reports) > _iso(old + timedelta(hours=1.5))
    with _client(stack, WRITE) as without:
        refused = without.get(f"/me/onlineMeetings/{meeting_id}/attendanceReports")
    assert refused.status_code == 403 and "OnlineMeetingArtifact.Read.All" in refused.json()["error"]["message"]
