"""Meeting writes as the organizer: createOrGet, PATCH, DELETE and the client SMS actions (delegated only).

With a delegated token Graph accepts these only on `/me/onlineMeetings` (a `/users/{id}` path is refused with
400). The app's Graph client drops kiota's `/me` URL-replace handler for speed, so the `/me` URLs are built
raw here, as the gateway builds its own; requests go through the gateway's client and error classification.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.common.clock import parse_timestamp_or_none
from shared.common.ids import is_guid
from shared.exceptions import GraphRequestError, MeetingNotFoundError
from shared.graph.gateway import GraphGateway, OrganizerOption, _odata_error_map, _segment
from shared.identity.tokens import SCOPE_MEETING_WRITE, SCOPE_SMS, TokenSource

# The externalId names the appointment, never its times: createOrGet is keyed on tenant + user + externalId,
# so a reschedule that overtakes its create, a retry or a replay all reach the same meeting.
_EXTERNAL_ID_PREFIX = "va-join-links:v1:"


def external_id(appointment_id: str) -> str:
    """The createOrGet externalId of an appointment: deterministic, and free of characters URLs mind."""
    return "va-" + hashlib.sha256((_EXTERNAL_ID_PREFIX + appointment_id).encode()).hexdigest()[:48]


@dataclass(frozen=True)
class Meeting:
    """What the app keeps of an online meeting."""

    id: str
    join_web_url: str | None
    start: datetime | None
    end: datetime | None
    # A calendar-backed meeting's event (immutable id); None for a standalone meeting.
    event_id: str | None = None


@dataclass(frozen=True)
class MeetingSpec:
    """What a created or updated meeting should say: times, subject and staff (user, role)."""

    start: datetime | None = None
    end: datetime | None = None
    subject: str | None = None
    participants: tuple[tuple[str, str], ...] = ()


class MeetingWriter:
    """createOrGet, PATCH and DELETE on the organizer's meetings, and the SMS actions on them."""

    def __init__(self, graph: GraphGateway) -> None:
        self._graph = graph

    async def create_or_get(self, organizer: str, ext_id: str, spec: MeetingSpec,
                            tokens: TokenSource | None = None, tenant: str | None = None) -> Meeting:
        """POST /me/onlineMeetings/createOrGet: 201 with a new meeting, or 200 with the one this externalId made."""
        from msgraph.generated.users.item.online_meetings.create_or_get import create_or_get_request_builder
        from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (
            CreateOrGetPostRequestBody,
        )

        body = CreateOrGetPostRequestBody(external_id=ext_id, subject=spec.subject, start_date_time=spec.start,
                                          end_date_time=spec.end, participants=_participants(spec.participants))
        url = f"{self._graph.my_meetings_url}/createOrGet"
        adapter = self._graph.client.request_adapter
        builder = create_or_get_request_builder.CreateOrGetRequestBuilder(adapter, url)
        source = self._graph.token_source(tokens)
        request = builder.to_post_request_information(body, _config(organizer, source, tenant=tenant))
        # The answer is read as JSON here, not as kiota's OnlineMeeting: building that model's deserializers
        # costs ~8 ms of CPU per meeting (msgraph's Entity table), more than everything else in the event.
        raw = await self._graph.call(organizer, source,
                                     lambda: adapter.send_primitive_async(request, "bytes", error_map()), tenant)
        return _meeting_from_json(raw)

    async def update(self, organizer: str, meeting_id: str, spec: MeetingSpec,
                     tokens: TokenSource | None = None, tenant: str | None = None) -> Meeting:
        """PATCH /me/onlineMeetings/{id} with both times (Graph changes neither alone) and the subject if given."""
        from msgraph.generated.models.online_meeting import OnlineMeeting
        from msgraph.generated.users.item.online_meetings.item import online_meeting_item_request_builder

        if spec.start is None or spec.end is None:
            raise ValueError("a meeting's times change only with both start and end")
        # No @odata.type in the body: Graph refuses it on PATCH ("One or more properties do not support updating").
        body = OnlineMeeting(odata_type=None, start_date_time=spec.start, end_date_time=spec.end, subject=spec.subject)
        adapter = self._graph.client.request_adapter
        builder = online_meeting_item_request_builder.OnlineMeetingItemRequestBuilder(
            adapter, f"{self._graph.my_meetings_url}/{_segment(meeting_id)}")
        source = self._graph.token_source(tokens)
        request = builder.to_patch_request_information(body, _config(organizer, source, tenant=tenant))
        # Graph answers with the whole meeting; nothing in it is needed, so it is not parsed (see create_or_get).
        await self._graph.call(organizer, source,
                               lambda: adapter.send_no_response_content_async(request, error_map()), tenant)
        return Meeting(meeting_id, None, spec.start, spec.end)

    async def delete(self, organizer: str, meeting_id: str, tokens: TokenSource | None = None,
                     tenant: str | None = None) -> bool:
        """DELETE /me/onlineMeetings/{id}; False when Graph says it is already gone (404 counts as done)."""
        from msgraph.generated.users.item.online_meetings.item import online_meeting_item_request_builder

        builder = online_meeting_item_request_builder.OnlineMeetingItemRequestBuilder(
            self._graph.client.request_adapter, f"{self._graph.my_meetings_url}/{_segment(meeting_id)}")
        source = self._graph.token_source(tokens)
        try:
            await self._graph.call(organizer, source,
                                   lambda: builder.delete(_config(organizer, source, tenant=tenant)), tenant)
        except MeetingNotFoundError:
            return False
        return True

    async def send_sms(self, organizer: str, meeting_id: str, message_type: str,
                       attendees: Sequence[tuple[str, str | None]], tokens: TokenSource | None = None,
                       tenant: str | None = None) -> None:
        """POST .../sendVirtualAppointmentSms (confirmation, reschedule or cancellation); Graph answers 202."""
        from msgraph.generated.models.virtual_appointment_message_type import VirtualAppointmentMessageType
        from msgraph.generated.users.item.online_meetings.item.send_virtual_appointment_sms import (
            send_virtual_appointment_sms_post_request_body as sms_body,
        )
        from msgraph.generated.users.item.online_meetings.item.send_virtual_appointment_sms import (
            send_virtual_appointment_sms_request_builder as sms_builder,
        )

        body = sms_body.SendVirtualAppointmentSmsPostRequestBody(
            attendees=_attendees(attendees), message_type=VirtualAppointmentMessageType(message_type))
        url = f"{self._graph.my_meetings_url}/{_segment(meeting_id)}/sendVirtualAppointmentSms"
        builder = sms_builder.SendVirtualAppointmentSmsRequestBuilder(self._graph.client.request_adapter, url)
        source = self._graph.token_source(tokens)
        await self._graph.call(organizer, source,
                               lambda: builder.post(body, _config(organizer, source, SCOPE_SMS, tenant)), tenant)

    async def send_reminder_sms(self, organizer: str, meeting_id: str, remind_before: str,
                                attendees: Sequence[tuple[str, str | None]], tokens: TokenSource | None = None,
                                tenant: str | None = None) -> None:
        """POST .../sendVirtualAppointmentReminderSms (`mins15`): Teams texts the clients before the start."""
        from msgraph.generated.models.remind_before_time_in_minutes_type import RemindBeforeTimeInMinutesType
        from msgraph.generated.users.item.online_meetings.item.send_virtual_appointment_reminder_sms import (
            send_virtual_appointment_reminder_sms_post_request_body as reminder_body,
        )
        from msgraph.generated.users.item.online_meetings.item.send_virtual_appointment_reminder_sms import (
            send_virtual_appointment_reminder_sms_request_builder as reminder_builder,
        )

        body = reminder_body.SendVirtualAppointmentReminderSmsPostRequestBody(
            attendees=_attendees(attendees),
            remind_before_time_in_minutes_type=RemindBeforeTimeInMinutesType(remind_before))
        url = f"{self._graph.my_meetings_url}/{_segment(meeting_id)}/sendVirtualAppointmentReminderSms"
        builder = reminder_builder.SendVirtualAppointmentReminderSmsRequestBuilder(
            self._graph.client.request_adapter, url)
        source = self._graph.token_source(tokens)
        await self._graph.call(organizer, source,
                               lambda: builder.post(body, _config(organizer, source, SCOPE_SMS, tenant)), tenant)


def _config(organizer: str, tokens: TokenSource, scopes: tuple[str, ...] = SCOPE_MEETING_WRITE,
            tenant: str | None = None) -> Any:
    from kiota_abstractions.base_request_configuration import RequestConfiguration

    # The organizer in their own tenant: only that tenant's token may sign the request.
    return RequestConfiguration(options=[OrganizerOption(organizer, scopes, tokens, tenant)])


def _participants(staff: Sequence[tuple[str, str]]) -> Any:
    if not staff:
        return None
    from msgraph.generated.models.identity import Identity
    from msgraph.generated.models.identity_set import IdentitySet
    from msgraph.generated.models.meeting_participant_info import MeetingParticipantInfo
    from msgraph.generated.models.meeting_participants import MeetingParticipants
    from msgraph.generated.models.online_meeting_role import OnlineMeetingRole

    def info(user: str, role: str) -> Any:
        who = {"identity": IdentitySet(user=Identity(id=user))} if is_guid(user) else {"upn": user}
        return MeetingParticipantInfo(role=OnlineMeetingRole(role), **who)

    return MeetingParticipants(attendees=[info(user, role) for user, role in staff])


def _attendees(attendees: Sequence[tuple[str, str | None]]) -> list[Any]:
    from msgraph.generated.models.attendee_notification_info import AttendeeNotificationInfo

    return [AttendeeNotificationInfo(phone_number=phone, time_zone=zone) for phone, zone in attendees]


def error_map() -> dict[str, Any]:
    """Graph's error answers as ODataError (every status)."""
    return _odata_error_map()


def _meeting_from_json(raw: Any) -> Meeting:
    try:
        doc = json.loads(raw or b"null")
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not doc.get("id"):
        raise GraphRequestError("Graph returned no meeting for createOrGet")
    return Meeting(str(doc["id"]), doc.get("joinWebUrl"), _time(doc.get("startDateTime")),
                   _time(doc.get("endDateTime")))


def _time(value: Any) -> datetime | None:
    parsed = parse_timestamp_or_none(value) if isinstance(value, str) else None
    return parsed.replace(tzinfo=UTC) if parsed is not None and parsed.tzinfo is None else parsed
