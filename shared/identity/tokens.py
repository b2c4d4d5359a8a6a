"""Delegated credentials: "a delegated access token for organizer X", behind one interface."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
# Client SMS (CLIENT_SMS, Teams Premium): sendVirtualAppointmentSms and sendVirtualAppointmentReminderSms.
SCOPE_SMS = (GRAPH_RESOURCE + "VirtualAppointmentNotification.Send",)
# Refresh this long before expiry, so a token never expires between cache read and Graph's check.
_EXPIRY_MARGIN_SECONDS = 300.0


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it expires (epoch seconds)."""

    token: str
    expires_on: float


class DelegatedTokenAcquirer(ABC):
    """Where tokens come from (the identity platform); called only on a cache miss."""

    @abstractmethod
    def acquire(self, organizer: str, scopes: Sequence[str]) -> AccessToken:
        """Get a delegated token for the organizer; blocking, run off the event loop."""


class TokenSource(Protocol):
    """Anything that can hand out a delegated Graph token for an organizer (vault cache, On-Behalf-Of)."""

    async def token_for(self, organizer: str, scopes: Sequence[str] = SCOPE_JOIN_URL) -> str:
        """A valid delegated access token."""

    def invalidate(self, organizer: str) -> None:
        """Forget cached tokens after Graph refused one."""


class DelegatedCredentials:
    """Delegated tokens per organizer and scope set, cached in memory until shortly before expiry.

    Concurrent callers for the same organizer share one token request, so a burst of events for one
    organizer costs one round trip to the identity platform per token lifetime.
    """

    def __init__(self, acquirer: DelegatedTokenAcquirer, clock: Any = time.time) -> None:
        self._acquirer = acquirer
        self._clock = clock
        self._tokens: dict[tuple[str, tuple[str, ...]], AccessToken] = {}
        self._inflight: dict[tuple[str, tuple[str, ...]], asyncio.Future[AccessToken]] = {}
        self.requests = 0

    async def token_for(self, organizer: str, scopes: Sequence[str] = SCOPE_JOIN_URL) -> str:
        """A valid delegated access token for the organizer."""
        key = (organizer.strip().lower(), tuple(sorted(scopes)))
        cached = self._tokens.get(key)
        if cached is not None and cached.expires_on - _EXPIRY_MARGIN_SECONDS > self._clock():
            return cached.token
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._inflight[key] = pending
            try:
                self.requests += 1
                token = await asyncio.to_thread(self._acquirer.acquire, organizer, list(scopes))
                ensure_delegated(token.token)
                self._tokens[key] = token
                pending.set_result(token)
            except BaseException as exc:
                pending.set_exception(exc)
                # Mark retrieved so an unawaited failure is not reported as "never retrieved".
                pending.exception()
                raise
            finally:
                del self._inflight[key]
            return token.token
        return (await asyncio.shield(pending)).token

    def invalidate(self, organizer: str) -> None:
        """Forget cached tokens for the organizer (after Graph refused one)."""
        prefix = organizer.strip().lower()
        for key in [k for k in self._tokens if k[0] == prefix]:
            del self._tokens[key]


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
