"""Fakes shared by unit and functional tests (fakes over mocks: they behave, they don't script)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.identity.tokens import AccessToken, DelegatedTokenAcquirer, OrganizerIdentity

TENANT = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"


class FakeGraph:
    """Meetings by (organizer, id); failures queued per call and raised in order. Every organizer belongs to
    TENANT unless `tenants` says otherwise; an organizer in `unknown` is not connected."""

    def __init__(self, meetings: dict[tuple[str, str], str] | None = None,
                 by_join_web_url: dict[tuple[str, str], str] | None = None,
                 tenants: dict[str, str] | None = None) -> None:
        self.meetings = meetings or {}
        self.by_join_web_url = by_join_web_url or {}
        self.tenants = tenants or {}
        self.unknown: set[str] = set()
        self.failures: list[BaseException | None] = []
        self.calls: list[tuple[str, str, str]] = []
        self.tenants_used: list[str | None] = []

    def _maybe_fail(self) -> None:
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:  # None: this call answers, a later one fails
                raise failure

    async def identify(self, organizer: str, tenant: str | None = None, tokens: Any = None) -> OrganizerIdentity:
        from shared.exceptions import OrganizerNotConnectedError

        if tokens is not None:  # a bearer caller's own source (On-Behalf-Of) knows who they are
            identity: OrganizerIdentity = await tokens.identify(organizer, tenant)
            return identity
        own = self.tenants.get(organizer, TENANT)
        if organizer in self.unknown or (tenant is not None and tenant != own):
            raise OrganizerNotConnectedError(f"organizer is not connected in tenant {tenant or own}")
        return OrganizerIdentity(own, organizer)

    async def join_web_url(self, organizer: str, meeting_id: str, tokens: Any = None,
                           tenant: str | None = None) -> str:
        from shared.exceptions import MeetingNotFoundError

        self.calls.append(("join", organizer, meeting_id))
        self.tenants_used.append(tenant)
        self._maybe_fail()
        try:
            return self.meetings[(organizer, meeting_id)]
        except KeyError:
            raise MeetingNotFoundError("Graph 404 NotFound: no such meeting") from None

    async def find_meeting_id(self, organizer: str, join_web_url: str, tokens: Any = None,
                              tenant: str | None = None) -> str:
        from shared.exceptions import MeetingNotFoundError

        self.calls.append(("find", organizer, join_web_url))
        self.tenants_used.append(tenant)
        self._maybe_fail()
        try:
            return self.by_join_web_url[(organizer, join_web_url)]
        except KeyError:
            raise MeetingNotFoundError("no online meeting of the organizer has that joinWebUrl") from None


    # --- meeting writes (shared.graph.meetings.MeetingWriter's interface) ------------------------------

    async def create_or_get(self, organizer: str, ext_id: str, spec: Any, tokens: Any = None,
                            tenant: str | None = None) -> Any:
        """createOrGet keyed on organizer + externalId, as Graph does; the meeting's join URL is derived."""
        from datetime import UTC, datetime, timedelta

        from shared.graph.meetings import Meeting

        self.calls.append(("createOrGet", organizer, ext_id))
        self._maybe_fail()
        created = getattr(self, "created", {})
        self.created = created
        self.made: list[Meeting] = getattr(self, "made", [])
        known = created.get((organizer, ext_id))
        # Keyed on the externalId of a live meeting: after a DELETE, the same externalId makes a new one.
        if known is None or (organizer, known.id) not in self.meetings:
            start = spec.start or datetime.now(UTC)
            meeting = Meeting(f"made-{len(self.made) + 1}", f"https://teams.microsoft.com/l/meetup-join/{ext_id}",
                              start, spec.end or start + timedelta(hours=1))
            created[(organizer, ext_id)] = meeting
            self.made.append(meeting)
            self.meetings[(organizer, meeting.id)] = f"https://visit.teams.microsoft.com/route?m={meeting.id}"
        return created[(organizer, ext_id)]

    async def update(self, organizer: str, meeting_id: str, spec: Any, tokens: Any = None,
                     tenant: str | None = None) -> Any:
        from shared.exceptions import MeetingNotFoundError
        from shared.graph.meetings import Meeting

        self.calls.append(("patch", organizer, meeting_id))
        self._maybe_fail()
        if (organizer, meeting_id) not in self.meetings:
            raise MeetingNotFoundError("Graph 404 NotFound: no such meeting")
        return Meeting(meeting_id, None, spec.start, spec.end)

    async def delete(self, organizer: str, meeting_id: str, tokens: Any = None, tenant: str | None = None) -> bool:
        self.calls.append(("delete", organizer, meeting_id))
        self._maybe_fail()
        return self.meetings.pop((organizer, meeting_id), None) is not None

    async def send_sms(self, organizer: str, meeting_id: str, message_type: str, attendees: Any,
                       tokens: Any = None, tenant: str | None = None) -> None:
        self.calls.append(("sms:" + message_type, organizer, meeting_id))
        self._maybe_fail()

    async def send_reminder_sms(self, organizer: str, meeting_id: str, remind_before: str, attendees: Any,
                                tokens: Any = None, tenant: str | None = None) -> None:
        self.calls.append(("sms:reminder", organizer, meeting_id))
        self._maybe_fail()


def make_flow(graph: FakeGraph, resolver: Any, store: Any = None, *, management: bool = False) -> Any:
    """The lifecycle flow over a fake Graph and (by default) the in-memory appointment store."""
    from shared.pipeline.appointment_flow import AppointmentFlow
    from shared.testing.appointments import InMemoryAppointmentStore

    return AppointmentFlow(resolver, graph, store if store is not None else InMemoryAppointmentStore(),
                           meeting_management=management, stale_after_seconds=300.0)


class FakeAcquirer(DelegatedTokenAcquirer):
    """Hands out numbered tokens; counts how often it was asked. `people` maps spellings (lower-cased UPN or
    oid) to one identity; anyone else is their own, in TENANT."""

    def __init__(self, lifetime: float = 3600.0, token: str | None = None,
                 people: dict[str, OrganizerIdentity] | None = None) -> None:
        self.lifetime = lifetime
        self.token = token
        self.people = people or {}
        self.calls = 0
        self.identified = 0
        self.scopes: list[tuple[str, ...]] = []

    def identify(self, organizer: str, tenant: str | None) -> OrganizerIdentity:
        from shared.exceptions import OrganizerNotConnectedError

        self.identified += 1
        identity = self.people.get(organizer.lower(), OrganizerIdentity(TENANT, organizer.lower()))
        if tenant is not None and tenant != identity.tenant_id:
            raise OrganizerNotConnectedError(f"not in tenant {tenant}")
        return identity

    def acquire(self, identity: OrganizerIdentity, scopes: Sequence[str]) -> AccessToken:
        import time

        self.calls += 1
        self.scopes.append(tuple(scopes))
        return AccessToken(self.token or f"token-{identity}-{self.calls}", time.time() + self.lifetime,
                           frozenset(scopes))


async def no_sleep(seconds: float) -> None:
    """A sleep that records nothing and waits for nothing."""


def make_rejections() -> Any:
    """A RejectionRecorder writing to memory (its `sink.sent` holds the records, in order)."""
    from shared.pipeline.rejections import RejectionRecorder
    from shared.testing.idempotency import InMemoryIdempotencyStore
    from shared.testing.overflow import InMemoryOverflowStore
    from shared.testing.requeue import InMemoryQueueWriter

    recorder = RejectionRecorder(InMemoryQueueWriter(), InMemoryOverflowStore(), InMemoryIdempotencyStore(),
                                 stale_claim_seconds=300)
    recorder.sink = recorder._sink
    return recorder
