"""first_result_ratio_calendar: from process start to both links of an appointment without a meeting with
MEETING_KIND=calendar, against the same Graph calls made raw (find the event by its extended property, POST the
event, find its meeting by JoinWebUrl, get the virtual-appointment link). bench/__main__.py calls `measure`."""

from __future__ import annotations

from typing import Any

from bench.common import ORGANIZER, Figure, Report, create_event_text, median, run_id
from bench.first_result import GRAPH, RUNS, _interleaved
from shared.graph.calendar import APPOINTMENT_PROPERTY

# The same imports as the other baselines, then the four raw calls the app makes on the calendar path.
CALENDAR_BASELINE_CHILD = """
import os, ssl, uuid
from urllib.parse import quote
import azure.functions, azure.identity, azure.storage.queue, msgraph
import httpx
PROPERTY = os.environ["BENCH_PROPERTY"]
context = ssl.create_default_context()
context.load_verify_locations(cafile=os.environ["TLS_CA_BUNDLE"])
base = os.environ["GRAPH_BASE_URL"]
appointment = uuid.uuid4().hex
calendar = {"Authorization": "Bearer " + os.environ["BENCH_CALENDAR_TOKEN"], "Prefer": 'IdType="ImmutableId"'}
with httpx.Client(verify=context) as client:
    odata = "singleValueExtendedProperties/Any(ep: ep/id eq '" + PROPERTY + "' and ep/value eq '" + appointment + "')"
    found = client.get(base + "/me/events?$filter=" + quote(odata, safe=""), headers=calendar)
    assert found.status_code == 200 and found.json()["value"] == [], found.status_code
    made = client.post(base + "/me/events", headers=calendar, json={
        "subject": "Bench", "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-01T09:30:00", "timeZone": "UTC"}, "isOnlineMeeting": True,
        "onlineMeetingProvider": "teamsForBusiness", "transactionId": str(uuid.uuid4()),
        "singleValueExtendedProperties": [{"id": PROPERTY, "value": appointment}]})
    assert made.status_code == 201, made.status_code
    join = made.json()["onlineMeeting"]["joinUrl"]
    lookup = base + "/users/" + os.environ["BENCH_ORGANIZER"] + "/onlineMeetings?$filter=" \\
        + quote("JoinWebUrl eq '" + join + "'", safe="")
    meeting = client.get(lookup, headers={"Authorization": "Bearer " + os.environ["BENCH_LOOKUP_TOKEN"]})
    meeting_id = meeting.json()["value"][0]["id"]
    url = base + "/users/" + os.environ["BENCH_ORGANIZER"] + "/onlineMeetings/" + meeting_id \\
        + "/getVirtualAppointmentJoinWebUrl()"
    answer = client.get(url, headers={"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]})
    assert answer.status_code == 200, answer.status_code
"""


def calendar_endpoints(endpoints: dict[str, Any]) -> dict[str, Any]:
    """The stack's endpoints with the app set to make calendar-backed meetings."""
    return {**endpoints, "settings": {**endpoints["settings"], "MEETING_MANAGEMENT": "true",
                                      "MEETING_KIND": "calendar"}}


def measure(report: Report, endpoints: dict[str, Any]) -> None:
    """An appointment without a meeting on the calendar path: the app's four Graph calls against the same raw."""
    def baseline_env(env: dict[str, str], acquirer: Any) -> dict[str, str]:
        identity = acquirer.identify(ORGANIZER, None)
        return {**env, "BENCH_ORGANIZER": ORGANIZER, "BENCH_PROPERTY": APPOINTMENT_PROPERTY,
                "BENCH_TOKEN": acquirer.acquire(identity, [GRAPH + "VirtualAppointment.Read"]).token,
                "BENCH_LOOKUP_TOKEN": acquirer.acquire(identity, [GRAPH + "OnlineMeetings.Read"]).token,
                "BENCH_CALENDAR_TOKEN": acquirer.acquire(identity, [GRAPH + "Calendars.ReadWrite"]).token}

    app, base = _interleaved(calendar_endpoints(endpoints), lambda: create_event_text(f"first-cal-{run_id()}"),
                             CALENDAR_BASELINE_CHILD, baseline_env)
    app_s, base_s = median(app), median(base)
    report.add(Figure("first_result_ratio_calendar", app_s / base_s, "<= 1.3",
                      detail=f"process start -> both links on join-urls, the meeting on the organizer's calendar: "
                             f"{app_s * 1000:.0f} ms (median of {RUNS}; range {min(app) * 1000:.0f}-"
                             f"{max(app) * 1000:.0f})",
                      baseline=f"SDK imports + the same four raw calls: {base_s * 1000:.0f} ms"))
