"""A meeting's attendance reports and their records, read as the organizer on /me (OnlineMeetingArtifact.Read.All).

Graph makes one report per meeting session once it ends, lists at most the 50 most recent, and pages a
report's records with @odata.nextLink. Answers are read as JSON (not kiota models), as graph.meetings does.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from shared.attendance.check import AttendanceCheck, aware_time
from shared.exceptions import GraphRequestError
from shared.graph.gateway import GraphGateway, OrganizerOption, _segment
from shared.identity.tokens import SCOPE_ATTENDANCE

# A report's records are paged; a virtual appointment has a handful of people, so this bound is generous.
_MAX_PAGES = 20


class AttendanceReader:
    """attendanceReports, then each report's attendanceRecords, of one meeting."""

    def __init__(self, graph: GraphGateway) -> None:
        self._graph = graph

    async def sessions(self, check: AttendanceCheck) -> list[list[dict[str, Any]]]:
        """The attendance records of every session overlapping the check's window (an empty list: none yet)."""
        base = f"{self._graph.my_meetings_url}/{_segment(check.online_meeting_id)}/attendanceReports"
        reports = await self._get(check, base)
        low, high = check.window()
        found = []
        for report in reports.get("value") or ():
            if isinstance(report, dict) and report.get("id") and _overlaps(report, low, high):
                found.append(await self._records(check, f"{base}/{_segment(str(report['id']))}/attendanceRecords"))
        return found

    async def _records(self, check: AttendanceCheck, url: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        next_url: str | None = url
        for _ in range(_MAX_PAGES):
            if not next_url:
                break
            page = await self._get(check, next_url)
            records.extend(r for r in page.get("value") or () if isinstance(r, dict))
            link = page.get("@odata.nextLink")
            next_url = link if isinstance(link, str) else None
        return records

    async def _get(self, check: AttendanceCheck, url: str) -> dict[str, Any]:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError
        from msgraph.generated.users.item.online_meetings.item.attendance_reports import (
            attendance_reports_request_builder as reports_builder,
        )

        adapter = self._graph.client.request_adapter
        source = self._graph.token_source(None)
        option = OrganizerOption(check.organizer, SCOPE_ATTENDANCE, source, check.tenant_id)
        # The reports builder with a raw URL serves the records list too: both are plain GETs of a collection.
        builder = reports_builder.AttendanceReportsRequestBuilder(adapter, url)
        request = builder.to_get_request_information(RequestConfiguration(options=[option]))
        raw = await self._graph.call(check.organizer, source,
                                     lambda: adapter.send_primitive_async(request, "bytes", {"XXX": ODataError}),
                                     check.tenant_id)
        try:
            doc = json.loads(raw or b"null")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise GraphRequestError("Graph returned no attendance collection")
        return doc


def _overlaps(report: dict[str, Any], low: datetime, high: datetime) -> bool:
    try:
        start = aware_time(str(report.get("meetingStartDateTime") or ""))
        end = aware_time(str(report.get("meetingEndDateTime") or report.get("meetingStartDateTime")))
    except ValueError:
        return False
    return start <= high and end >= low
