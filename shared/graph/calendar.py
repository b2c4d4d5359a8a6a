"""Calendar-backed meetings as the organizer: the appointment's event on their calendar, with a Teams meeting.

Graph v1.0 (../shared/FACTS.md, "Calendar-backed meetings and change notifications"): `POST /me/events` with
`isOnlineMeeting` and `teamsForBusiness`, no attendees (attendees get Exchange invitations and an update on every
change; the scheduler sends its own), and a single-value extended property holding the appointment id, by which
the event is found again before any create: retries, duplicates, several instances and a reschedule that
overtook its create all reach one event; `transactionId` is a second guard. Every call sends
`Prefer: IdType="ImmutableId"` (cancel moves the event to Deleted Items, and ordinary ids change on moves).
The 201 answer is checked (`isOnlineMeeting` and a join URL), the meeting id behind the join URL is looked up
with `$filter=JoinWebUrl` (empty for a moment after creation: retried with back-off). Reschedule PATCHes only
`start`/`end` (and `subject`), never the body, then reads the event again; cancel is `POST .../cancel`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.common.clock import parse_timestamp_or_none
from shared.exceptions import (
    AppointmentCancelledError,
    GraphRequestError,
    MeetingNotFoundError,
    OnlineMeetingMissingError,
    TransientError,
)
from shared.graph.gateway import GraphGateway, OrganizerOption, _segment
from shared.graph.meetings import Meeting, MeetingSpec, error_map
from shared.identity.tokens import SCOPE_CALENDAR, TokenSource

log = logging.getLogger(__name__)
# The app's own named property: a GUID of this app's, and a name saying what the value is.
APPOINTMENT_PROPERTY = "String {0d5e7a9c-3b1f-4c6e-8a2d-7f4b9e1c5a30} Name VaJoinLinksAppointmentId"
PREFER_IMMUTABLE = 'IdType="ImmutableId"'
_TRANSACTION_NAMESPACE = uuid.UUID("7f0b3c1e-2d4a-4e6f-9b8c-5a1d3e7f9c20")
# Waits between JoinWebUrl lookups of a new event's meeting (Graph may not know it for a moment).
LOOKUP_BACKOFF_SECONDS = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class CalendarEvent:
    """What the app reads of a calendar event."""

    id: str  # immutable id
    join_url: str | None
    is_online_meeting: bool
    start: datetime | None
    end: datetime | None
    subject: str | None
    cancelled: bool
    appointment_id: str | None
    change_key: str | None = None


def transaction_id(appointment_id: str) -> str:
    """The event's transactionId: one per appointment (a GUID, as Graph's examples use)."""
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, appointment_id))


def property_filter(appointment_id: str) -> str:
    """The OData filter finding the appointment's event by its extended property."""
    value = appointment_id.replace("'", "''")
    return (f"singleValueExtendedProperties/Any(ep: ep/id eq '{APPOINTMENT_PROPERTY}' and "
            f"ep/value eq '{value}')")


class CalendarWriter:
    """The appointment's calendar event and its Teams meeting, through the gateway's client and classification."""

    def __init__(self, graph: GraphGateway, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self._graph = graph
        self._sleep = sleep

    @property
    def _events_url(self) -> str:
        return self._graph.my_meetings_url.rsplit("/", 1)[0] + "/events"

    async def find(self, organizer: str, appointment_id: str, *, tenant: str | None = None,
                   tokens: TokenSource | None = None) -> CalendarEvent | None:
        """The appointment's event on the organizer's calendar (not one cancelled), or None."""
        from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder

        query = f"$filter={_segment(property_filter(appointment_id))}&$expand={_segment(_expand())}"
        builder = EventsRequestBuilder(self._graph.client.request_adapter, f"{self._events_url}?{query}")
        doc = await self._send(organizer, tokens, tenant, builder.to_get_request_information(None), SCOPE_CALENDAR)
        found = [_event(item) for item in (doc or {}).get("value") or [] if isinstance(item, dict)]
        live = [e for e in found if not e.cancelled]
        return live[0] if live else None

    async def get(self, organizer: str, event_id: str, *, tenant: str | None = None,
                  tokens: TokenSource | None = None) -> CalendarEvent | None:
        """The event by its immutable id (Deleted Items included), or None when Graph no longer has it."""
        from msgraph.generated.users.item.events.item.event_item_request_builder import EventItemRequestBuilder

        url = f"{self._events_url}/{_segment(event_id)}?$expand={_segment(_expand())}"
        builder = EventItemRequestBuilder(self._graph.client.request_adapter, url)
        try:
            doc = await self._send(organizer, tokens, tenant, builder.to_get_request_information(None),
                                   SCOPE_CALENDAR)
        except MeetingNotFoundError:
            return None
        return _event(doc)

    async def ensure(self, organizer: str, appointment_id: str, spec: MeetingSpec, *,
                     tenant: str | None = None, tokens: TokenSource | None = None) -> Meeting:
        """The appointment's event with its Teams meeting: the one found by the property, or a new one."""
        event = await self.find(organizer, appointment_id, tenant=tenant, tokens=tokens)
        if event is None:
            event = await self._create(organizer, appointment_id, spec, tenant, tokens)
        if not event.is_online_meeting or not event.join_url:
            await self._discard(organizer, event, tenant, tokens)
            raise OnlineMeetingMissingError(
                "Graph made the calendar event without a Teams meeting (isOnlineMeeting false or no joinUrl): "
                "check that the organizer's calendar allows teamsForBusiness (allowedOnlineMeetingProviders) and "
                "that they have a Teams licence")
        meeting_id = await self.meeting_id(organizer, event.join_url, tenant=tenant, tokens=tokens)
        return Meeting(meeting_id, event.join_url, event.start, event.end, event_id=event.id)

    async def move(self, organizer: str, event_id: str, spec: MeetingSpec, known_join_url: str | None, *,
                   tenant: str | None = None, tokens: TokenSource | None = None) -> Meeting:
        """PATCH start/end (and subject) only, read the event again; a new join URL is resolved to its meeting."""
        from msgraph.generated.models.event import Event
        from msgraph.generated.users.item.events.item.event_item_request_builder import EventItemRequestBuilder

        if spec.start is None or spec.end is None:
            raise ValueError("an event moves with both start and end")
        body = Event(odata_type=None, start=_when(spec.start), end=_when(spec.end), subject=spec.subject)
        builder = EventItemRequestBuilder(self._graph.client.request_adapter,
                                          f"{self._events_url}/{_segment(event_id)}")
        try:
            await self._send(organizer, tokens, tenant, builder.to_patch_request_information(body), SCOPE_CALENDAR)
        except (GraphRequestError, MeetingNotFoundError):
            # The staff member may have cancelled or deleted the event in Outlook before this reschedule came:
            # Graph refuses the PATCH (400 on a cancelled meeting, 404 once deleted), and that is the organizer's
            # cancel, told by its change notification, not a bad request of the scheduler's.
            if await self._still_there(organizer, event_id, tenant, tokens):
                raise
            raise _cancelled_first() from None
        event = await self.get(organizer, event_id, tenant=tenant, tokens=tokens)
        if event is None or event.cancelled:
            raise _cancelled_first()
        meeting_id = None
        if event.join_url and event.join_url != known_join_url:
            meeting_id = await self.meeting_id(organizer, event.join_url, tenant=tenant, tokens=tokens)
        return Meeting(meeting_id or "", event.join_url, event.start, event.end, event_id=event.id)

    async def _still_there(self, organizer: str, event_id: str, tenant: str | None,
                           tokens: TokenSource | None) -> bool:
        event = await self.get(organizer, event_id, tenant=tenant, tokens=tokens)
        return event is not None and not event.cancelled

    async def cancel(self, organizer: str, event_id: str, comment: str | None = None, *,
                     tenant: str | None = None, tokens: TokenSource | None = None) -> bool:
        """POST /me/events/{id}/cancel (the Teams meeting behind it is left alone); False if already gone."""
        from msgraph.generated.users.item.events.item.cancel.cancel_post_request_body import CancelPostRequestBody
        from msgraph.generated.users.item.events.item.cancel.cancel_request_builder import CancelRequestBuilder

        builder = CancelRequestBuilder(self._graph.client.request_adapter,
                                       f"{self._events_url}/{_segment(event_id)}/cancel")
        request = builder.to_post_request_information(CancelPostRequestBody(comment=comment))
        try:
            await self._send(organizer, tokens, tenant, request, SCOPE_CALENDAR)
        except MeetingNotFoundError:
            return False
        return True

    async def meeting_id(self, organizer: str, join_url: str, *, tenant: str | None = None,
                         tokens: TokenSource | None = None) -> str:
        """The online meeting id behind an event's join URL, retried while Graph does not know it yet."""
        for wait in (*LOOKUP_BACKOFF_SECONDS, None):
            try:
                return await self._graph.find_meeting_id(organizer, join_url, tokens, tenant)
            except MeetingNotFoundError:
                if wait is None:
                    break
                await self._sleep(wait)
        # The event exists and the record names it: a retry finds it again, never a second event.
        raise TransientError("the calendar event's Teams meeting cannot be found by its join URL yet",
                             reason="meeting_lookup_pending", retry_after=30.0)

    async def _create(self, organizer: str, appointment_id: str, spec: MeetingSpec, tenant: str | None,
                      tokens: TokenSource | None) -> CalendarEvent:
        from msgraph.generated.models.event import Event
        from msgraph.generated.models.online_meeting_provider_type import OnlineMeetingProviderType
        from msgraph.generated.models.single_value_legacy_extended_property import (
            SingleValueLegacyExtendedProperty,
        )
        from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder

        if spec.start is None or spec.end is None:
            raise GraphRequestError("a calendar event needs the appointment's start and end")
        body = Event(subject=spec.subject or "Appointment", start=_when(spec.start), end=_when(spec.end),
                     is_online_meeting=True, online_meeting_provider=OnlineMeetingProviderType.TeamsForBusiness,
                     transaction_id=transaction_id(appointment_id),
                     single_value_extended_properties=[
                         SingleValueLegacyExtendedProperty(id=APPOINTMENT_PROPERTY, value=appointment_id)])
        builder = EventsRequestBuilder(self._graph.client.request_adapter, self._events_url)
        doc = await self._send(organizer, tokens, tenant, builder.to_post_request_information(body), SCOPE_CALENDAR)
        created = _event(doc)
        log.info("calendar event made for appointment %s", appointment_id,
                 extra={"appointment_id": appointment_id, "outcome": "event_created"})
        return created

    async def _discard(self, organizer: str, event: CalendarEvent, tenant: str | None,
                       tokens: TokenSource | None) -> None:
        """Delete an event Graph made without a meeting, so no dead appointment is left on the calendar."""
        from msgraph.generated.users.item.events.item.event_item_request_builder import EventItemRequestBuilder

        builder = EventItemRequestBuilder(self._graph.client.request_adapter,
                                          f"{self._events_url}/{_segment(event.id)}")
        try:
            await self._send(organizer, tokens, tenant, builder.to_delete_request_information(), SCOPE_CALENDAR)
        except (MeetingNotFoundError, TransientError, GraphRequestError) as exc:
            log.warning("calendar event without a meeting not deleted: %s", type(exc).__name__)

    async def _send(self, organizer: str, tokens: TokenSource | None, tenant: str | None, request: Any,
                    scopes: tuple[str, ...]) -> Any:
        return await send_json(self._graph, organizer, tokens, tenant, request, scopes)


async def send_json(graph: GraphGateway, organizer: str, tokens: TokenSource | None, tenant: str | None,
                    request: Any, scopes: tuple[str, ...]) -> Any:
    """A request as the organizer with `Prefer: IdType="ImmutableId"`, its answer read as JSON (None if empty)."""
    source = graph.token_source(tokens)
    request.add_request_options([OrganizerOption(organizer, scopes, source, tenant)])
    request.headers.try_add("Prefer", PREFER_IMMUTABLE)
    adapter = graph.client.request_adapter
    # Read as JSON, not as kiota's models (their deserializers cost milliseconds of CPU per event).
    raw = await graph.call(organizer, source, lambda: adapter.send_primitive_async(request, "bytes", error_map()),
                           tenant)
    return json.loads(raw) if raw else None


def _expand() -> str:
    return f"singleValueExtendedProperties($filter=id eq '{APPOINTMENT_PROPERTY}')"


def _when(value: datetime) -> Any:
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone

    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return DateTimeTimeZone(date_time=utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], time_zone="UTC")


def event_from_json(doc: Any) -> CalendarEvent:
    """A calendar event from Graph's JSON (an answer, or a delta round's item)."""
    return _event(doc)


def _event(doc: Any) -> CalendarEvent:
    if not isinstance(doc, dict) or not doc.get("id"):
        raise GraphRequestError("Graph returned no calendar event")
    meeting = doc.get("onlineMeeting") if isinstance(doc.get("onlineMeeting"), dict) else {}
    properties = doc.get("singleValueExtendedProperties") or []
    appointment = next((p.get("value") for p in properties if isinstance(p, dict)
                        and str(p.get("id", "")).lower() == APPOINTMENT_PROPERTY.lower()), None)
    return CalendarEvent(str(doc["id"]), meeting.get("joinUrl") if meeting else None,
                         doc.get("isOnlineMeeting") is True, _time(doc.get("start")), _time(doc.get("end")),
                         doc.get("subject"), doc.get("isCancelled") is True, appointment, doc.get("changeKey"))


def _time(value: Any) -> datetime | None:
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        return None
    zone = str(value.get("timeZone") or "UTC").upper()
    parsed = parse_timestamp_or_none(value["dateTime"] + ("Z" if zone in ("UTC", "ETC/UTC") else ""))
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _cancelled_first() -> AppointmentCancelledError:
    return AppointmentCancelledError(
        "the organizer cancelled or deleted the appointment's calendar event in Outlook before this reschedule: "
        "nothing was changed (the scheduler hears appointment.cancelled_by_organizer)")
