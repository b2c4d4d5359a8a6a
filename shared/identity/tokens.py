"""Delegated credentials: "a delegated access token for organizer X", behind one interface."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from shared.exceptions import (
    AppOnlyTokenError,
)

log = logging.getLogger(__name__)

GRAPH_RESOURCE = "https://graph.microsoft.com/"
# Least privilege: the join URL needs only VirtualAppointment.Read; OnlineMeetings.Read is asked for
# only when an event carries a joinWebUrl and the meeting id must be looked up.
SCOPE_JOIN_URL = (GRAPH_RESOURCE + "VirtualAppointment.Read",)
SCOPE_MEETING_LOOKUP = (GRAPH_RESOURCE + "OnlineMeetings.Read",)
# Meeting management (MEETING_MANAGEMENT): createOrGet, PATCH and DELETE as the organizer.
SCOPE_MEETING_WRITE = (GRAPH_RESOURCE + "OnlineMeetings.ReadWrite",)
# Calendar-backed meetings (MEETING_KIND=calendar): the appointment's event on the organizer's calendar, and its
# change notifications; the meeting id behind the event's join URL is looked up with OnlineMeetings.Read.
SCOPE_CALENDAR = (GRAPH_RESOURCE + "Calendars.ReadWrite",)
# Client SMS (CLIENT_SMS, Teams Premium): sendVirtualAppointmentSms and sendVirtualAppointmentReminderSms.
SCOPE_SMS = (GRAPH_RESOURCE + "VirtualAppointmentNotification.Send",)
# Attendance reports (ATTENDANCE_REPORTS): a meeting's attendanceReports and their records, as the organizer.
SCOPE_ATTENDANCE = (GRAPH_RESOURCE + "OnlineMeetingArtifact.Read.All",)
# Refresh this long before expiry, so a token never expires between cache read and Graph's check.
_EXPIRY_MARGIN_SECONDS = 300.0
# How long a spelling of an organizer (UPN or object id) is trusted to name the same person without asking
# the vault again: a UPN can move to someone else, an organizer can be removed.
_IDENTITY_TTL_SECONDS = 900.0
T = TypeVar("T")


@dataclass(frozen=True)
class OrganizerIdentity:
    """Who an organizer is, whatever an event calls them (object id or UPN, any case): tenant and object id."""

    tenant_id: str
    oid: str

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.oid}"


@dataclass(frozen=True)
class AccessToken:
    """A bearer token, when it expires (epoch seconds), and the scopes it was granted for."""

    token: str
    expires_on: float
    scopes: frozenset[str] = frozenset()


class DelegatedTokenAcquirer(ABC):
    """Where tokens come from (the identity platform); called only on a cache miss, off the event loop."""

    @abstractmethod
    def identify(self, organizer: str, tenant: str | None) -> OrganizerIdentity:
        """The organizer's canonical identity; OrganizerNotConnectedError if unknown (or not in `tenant`)."""

    @abstractmethod
    def acquire(self, identity: OrganizerIdentity, scopes: Sequence[str]) -> AccessToken:
        """A delegated token for the organizer carrying at least `scopes`."""


class TokenSource(Protocol):
    """Anything that can hand out a delegated Graph token for an organizer (vault cache, On-Behalf-Of)."""

    async def identify(self, organizer: str, tenant: str | None = None) -> OrganizerIdentity:
        """The organizer's tenant and object id; a `tenant` the organizer does not belong to is refused."""

    async def token_for(self, organizer: str, scopes: Sequence[str] = SCOPE_JOIN_URL,
                        tenant: str | None = None) -> str:
        """A valid delegated access token."""

    def invalidate(self, organizer: str, tenant: str | None = None) -> None:
        """Forget cached tokens after Graph refused one."""


class DelegatedCredentials:
    """One delegated token per organizer, keyed by their canonical identity (tenant and object id): never by
    how an event spelled the organizer, never per scope. Cached in memory until shortly before expiry.

    Concurrent callers for the same organizer share one token request, so a burst of events for one
    organizer costs one round trip to the identity platform per token lifetime, however they name them.
    """

    def __init__(self, acquirer: DelegatedTokenAcquirer, clock: Any = time.time) -> None:
        self._acquirer = acquirer
        self._clock = clock
        # How events spelled an organizer (lower-cased, with the event's tenant) -> who it is, until when.
        self._identities: dict[tuple[str, str], tuple[OrganizerIdentity, float]] = {}
        self._tokens: dict[OrganizerIdentity, AccessToken] = {}
        self._inflight: dict[object, asyncio.Future[Any]] = {}
        self.requests = 0

    async def identify(self, organizer: str, tenant: str | None = None) -> OrganizerIdentity:
        """The organizer's canonical identity (a vault read the first time a spelling is seen)."""
        spelled = (organizer.strip().lower(), (tenant or "").strip().lower())
        known = self._identities.get(spelled)
        if known is not None and known[1] > self._clock():
            return known[0]
        identity: OrganizerIdentity = await self._once(
            ("identify", *spelled), lambda: asyncio.to_thread(self._acquirer.identify, organizer, tenant))
        self._identities[spelled] = (identity, self._clock() + _IDENTITY_TTL_SECONDS)
        return identity

    async def token_for(self, organizer: str, scopes: Sequence[str] = SCOPE_JOIN_URL,
                        tenant: str | None = None) -> str:
        """A valid delegated access token for the organizer, carrying `scopes`."""
        identity = await self.identify(organizer, tenant)
        wanted = frozenset(scopes)
        while True:
            cached = self._tokens.get(identity)
            if cached is not None and cached.expires_on - _EXPIRY_MARGIN_SECONDS > self._clock() \
                    and wanted <= cached.scopes:
                return cached.token
            if identity in self._inflight:
                # Someone is fetching this organizer's token: share it, then check it carries our scopes.
                await asyncio.shield(self._inflight[identity])
                continue
            # One token for everything asked of this organizer so far: the scopes grow, never alternate.
            asked = wanted | (cached.scopes if cached is not None else frozenset())
            token: AccessToken = await self._once(identity, functools.partial(self._acquire, identity, asked))
            return token.token

    async def _acquire(self, identity: OrganizerIdentity, wanted: frozenset[str]) -> AccessToken:
        self.requests += 1
        token = await asyncio.to_thread(self._acquirer.acquire, identity, sorted(wanted))
        ensure_delegated(token.token)
        token = replace(token, scopes=token.scopes or wanted)
        self._tokens[identity] = token
        return token

    async def _once(self, key: object, fetch: Callable[[], Awaitable[T]]) -> T:
        """Run `fetch` once for concurrent callers of the same key; they all get its result or its error."""
        pending = self._inflight.get(key)
        if pending is not None:
            result: T = await asyncio.shield(pending)
            return result
        pending = asyncio.get_running_loop().create_future()
        self._inflight[key] = pending
        try:
            value = await fetch()
            pending.set_result(value)
            return value
        except BaseException as exc:
            pending.set_exception(exc)
            # Mark retrieved so an unawaited failure is not reported as "never retrieved".
            pending.exception()
            raise
        finally:
            del self._inflight[key]

    def invalidate(self, organizer: str, tenant: str | None = None) -> None:
        """Forget the organizer's token (after Graph refused it) and how this spelling resolved."""
        spelled = (organizer.strip().lower(), (tenant or "").strip().lower())
        known = self._identities.pop(spelled, None)
        if known is not None:
            self._tokens.pop(known[0], None)


def token_claims(token: str) -> dict[str, Any]:
    """Decode a JWT's claims without verifying it (for classification only, never for trust)."""
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def ensure_delegated(token: str) -> None:
    """Raise AppOnlyTokenError for an app-only token, before Graph answers 403 to it."""
    claims = token_claims(token)
    if claims.get("idtyp") == "app" or ("roles" in claims and "scp" not in claims):
        raise AppOnlyTokenError(
            "the credential produced an app-only token, but getVirtualAppointmentJoinWebUrl supports "
            "delegated permissions only (least privileged: VirtualAppointment.Read); the organizer "
            "must connect with a delegated sign-in")
