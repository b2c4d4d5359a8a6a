"""GraphEmulator: meetings, access token verification, fault rules and counters."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from jwt.algorithms import RSAAlgorithm

AUDIENCES = ["https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"]
TOKEN_CACHE_MAX = 50_000


class GraphError(Exception):
    """An error rendered in Graph's `{"error": {...}}` shape."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


@dataclass
class FaultRule:
    """One configured fault; `remaining` None means it never runs out."""

    meeting_id: str
    status: int | str
    retry_after: int | None
    remaining: int | None
    probability: float

    def as_dict(self) -> dict[str, Any]:
        """JSON form as accepted by PUT /_admin/faults."""
        return {"meeting_id": self.meeting_id, "status": self.status, "retry_after": self.retry_after,
                "times": self.remaining, "probability": self.probability}


@dataclass
class FaultConfig:
    """Latency and fault rules, with a seedable random source for `probability`."""

    latency_ms: float = 0.0
    rules: list[FaultRule] = field(default_factory=list)
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random)


@dataclass
class GraphStats:
    """Counters served by /_admin/stats."""

    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_meeting: Counter[str] = field(default_factory=Counter)
    by_user: Counter[str] = field(default_factory=Counter)
    by_tenant: Counter[str] = field(default_factory=Counter)


@dataclass
class Caller:
    """The principal a verified access token speaks for."""

    oid: str
    upn: str | None
    scopes: frozenset[str]
    app_only: bool
    # The tenant the token was issued in (`tid`): it owns what the caller may see.
    tenant_id: str = ""


class GraphEmulator:
    """State of the Graph emulator: meetings, token verification, faults and counters."""

    def __init__(self, meetings: list[dict[str, Any]], directory: Mapping[str, Any],
                 jwks_uri: str | Mapping[str, Any], issuer_base: str, ca_pem: Path | str | None) -> None:
        # The home tenant, and every tenant whose tokens Graph accepts (each with its own issuer).
        self.tenant_id: str = directory["tenant_id"]
        self.tenants = {t["tenant_id"] for t in (directory, *directory.get("customer_tenants", []))}
        self.users = {u["oid"]: {**u, "tenant_id": t["tenant_id"]}
                      for t in (directory, *directory.get("customer_tenants", [])) for u in t.get("users", [])}
        self._users_by_upn = {u["upn"].lower(): u for u in self.users.values()}
        self.issuer_base = issuer_base.rstrip("/")
        self.issuer = f"{self.issuer_base}/{self.tenant_id}/v2.0"
        self.meetings: dict[str, dict[str, Any]] = {}
        # createOrGet's key: (tenant, organizer oid, externalId) -> meeting id.
        self.external_ids: dict[tuple[str, str, str], str] = {}
        # Deleted meetings, kept for the admin API (tests and chaos count them).
        self.deleted: dict[str, dict[str, Any]] = {}
        self.updates = 0
        # Calendar events (devstack/graph/calendar.py): by immutable id, by current REST id, by transactionId.
        self.events: dict[str, dict[str, Any]] = {}
        self.events_by_rest_id: dict[str, dict[str, Any]] = {}
        self.event_transactions: dict[tuple[str, str, str], str] = {}
        # calendarView/delta: each change's sequence number, and per delta token (owner, window, the sequence the
        # round it ended had seen), so a round from a delta link returns only what changed since.
        self.change_sequence = 0
        self.delta_tokens: dict[str, tuple[str, datetime, datetime, int]] = {}
        # How many more JoinWebUrl lookups of a new calendar meeting come back empty (just after creation).
        self.lookup_lag: dict[str, int] = {}
        self.calendar_config: dict[str, Any] = {"teams_online_meetings": True, "meeting_lookup_lag": 0}
        self.invitations_sent = 0
        self.calendar_updates = 0
        self.organizer_edits = 0
        # Change notifications for calendar events (devstack/graph/subscriptions.py sets this).
        self.change_listeners: list[Any] = []
        self.sms_sent: list[dict[str, Any]] = []
        # Attendance reports per meeting id, one per played session (devstack/graph/attendance.py).
        self.attendance: dict[str, list[dict[str, Any]]] = {}
        # A tenant without Teams Premium gets 403 from the SMS actions (PUT /_admin/config).
        self.teams_premium = True
        for m in meetings:
            self.add_meeting(m)
        self.faults = FaultConfig()
        self.stats = GraphStats()
        self._jwks_uri: str | None = None
        self._keys: dict[str, Any] = {}
        if isinstance(jwks_uri, str):
            self._jwks_uri = jwks_uri
        else:
            self._keys = _load_keys(jwks_uri)
        self._jwks_lock = asyncio.Lock()
        self._ca_pem = ca_pem
        self._session: aiohttp.ClientSession | None = None
        # Verified claims by raw token: RS256 verification dominates the hot path otherwise.
        self._verified: dict[str, dict[str, Any]] = {}

    # --- meetings --------------------------------------------------------------------------------

    def add_meeting(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, complete and store one meeting (same shape as seed/meetings.json)."""
        organizer = raw.get("organizer")
        if not isinstance(organizer, str) or not organizer:
            raise ValueError("meeting needs an 'organizer' (oid or upn)")
        organizer = self.oid_of(organizer)
        participants = [self.oid_of(p) for p in raw.get("participants", [])]
        # A meeting lives in its organizer's tenant.
        tenant = raw.get("tenant_id") or self.users.get(organizer, {}).get("tenant_id") or self.tenant_id
        thread = f"19:meeting_{secrets.token_hex(8)}@thread.v2"
        mid = raw.get("id") or base64.b64encode(f"1*{organizer}*0**{thread}".encode()).decode()
        join = raw.get("joinWebUrl") or (
            f"https://teams.microsoft.com/l/meetup-join/{thread.replace(':', '%3a').replace('@', '%40')}/0"
            f"?context=%7b%22Tid%22%3a%22{tenant}%22%7d")
        meeting = {**raw, "id": mid, "organizer": organizer, "participants": participants,
                   "subject": raw.get("subject", ""), "joinWebUrl": join, "tenant_id": tenant}
        meeting.setdefault("virtualAppointmentJoinWebUrl",
                           f"https://visit.teams.microsoft.com/webrtc-svc/api/route?tid={tenant}"
                           f"&convId={thread}")
        self.meetings[mid] = meeting
        return meeting

    def oid_of(self, ref: str) -> str:
        """The object id of a user named by object id or UPN (the reference itself if unknown)."""
        user = self.users.get(ref) or self._users_by_upn.get(ref.lower())
        return user["oid"] if user else ref

    def meeting_resource(self, m: Mapping[str, Any]) -> dict[str, Any]:
        """The onlineMeeting resource as Graph returns it."""
        def identity(oid: str, role: str) -> dict[str, Any]:
            user = self.users.get(oid, {})
            return {"upn": user.get("upn"), "role": role,
                    "identity": {"user": {"id": oid, "displayName": user.get("display_name"),
                                          "tenantId": user.get("tenant_id", m["tenant_id"]),
                                          "identityProvider": "AAD"}}}

        thread = _thread_id(m["id"])
        return {
            "id": m["id"], "subject": m["subject"], "joinWebUrl": m["joinWebUrl"], "externalId": m.get("externalId"),
            "creationDateTime": m.get("creationDateTime"), "startDateTime": m.get("startDateTime"),
            "endDateTime": m.get("endDateTime"), "isBroadcast": False,
            "allowedPresenters": "everyone", "allowMeetingChat": "enabled",
            "chatInfo": ({"threadId": thread, "messageId": "0", "replyChainMessageId": None}
                         if thread else None),
            "participants": {"organizer": identity(m["organizer"], "presenter"),
                             "attendees": [identity(p, "attendee") for p in m["participants"]]},
        }

    def notify(self, event: Mapping[str, Any], change_type: str) -> None:
        """Offer one change of a calendar event to whoever listens (the subscriptions)."""
        for listener in self.change_listeners:
            listener(event, change_type)

    def lookup_pending(self, join_url: str) -> bool:
        """Whether a JoinWebUrl lookup of this meeting still comes back empty (one lookup spent)."""
        left = self.lookup_lag.get(join_url, 0)
        if left <= 0:
            return False
        self.lookup_lag[join_url] = left - 1
        return True

    # --- tokens ----------------------------------------------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """Verify an Entra access token (signature, issuer, audience, lifetime); returns its claims."""
        claims = self._verified.get(token)
        if claims is not None:
            if claims["exp"] <= time.time():
                self._verified.pop(token, None)
                raise GraphError(401, "InvalidAuthenticationToken",
                                 "Lifetime validation failed, the token is expired.")
            return claims
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise GraphError(401, "InvalidAuthenticationToken",
                             "IDX14100: JWT is not well formed, there are no dots (.).") from None
        key = await self._key(kid)
        if key is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Signing key is invalid.")
        # Every tenant has its own issuer; a token is checked against the issuer of the tenant it names.
        tenant = str(jwt.decode(token, options={"verify_signature": False}).get("tid") or "")
        if tenant not in self.tenants:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid issuer.")
        try:
            claims = jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCES,
                                issuer=f"{self.issuer_base}/{tenant}/v2.0",
                                options={"require": ["exp", "iss", "aud", "oid", "tid"]})
        except jwt.ExpiredSignatureError:
            raise GraphError(401, "InvalidAuthenticationToken",
                             "Lifetime validation failed, the token is expired.") from None
        except jwt.InvalidAudienceError:
            raise GraphError(401, "InvalidAuthenticationToken",
                             "Access token validation failure. Invalid audience.") from None
        except jwt.InvalidIssuerError:
            raise GraphError(401, "InvalidAuthenticationToken",
                             "Access token validation failure. Invalid issuer.") from None
        except jwt.PyJWTError as exc:
            raise GraphError(401, "InvalidAuthenticationToken",
                             f"Access token validation failure. {exc}") from None
        if len(self._verified) >= TOKEN_CACHE_MAX:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    async def _key(self, kid: str | None) -> Any:
        if kid in self._keys or self._jwks_uri is None:
            return self._keys.get(kid or "")
        async with self._jwks_lock:
            # One refetch per unknown kid covers a restarted Entra emulator with a new key.
            if kid not in self._keys:
                self._keys = _load_keys(await self._fetch_jwks())
        return self._keys.get(kid or "")

    async def _fetch_jwks(self) -> Mapping[str, Any]:
        assert self._jwks_uri is not None
        if self._session is None:
            ctx = ssl.create_default_context(cafile=str(self._ca_pem) if self._ca_pem else None)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
        async with self._session.get(self._jwks_uri, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            resp.raise_for_status()
            jwks: Mapping[str, Any] = await resp.json()
            return jwks

    async def close(self) -> None:
        """Release the JWKS HTTP session."""
        if self._session is not None:
            await self._session.close()

    def caller(self, claims: Mapping[str, Any]) -> Caller:
        """Who is calling, and with which delegated scopes."""
        scp = claims.get("scp")
        if not scp:
            return Caller(claims["oid"], None, frozenset(), app_only=True, tenant_id=claims["tid"])
        upn = claims.get("upn") or claims.get("preferred_username")
        return Caller(claims["oid"], upn, frozenset(scp.split()), app_only=False, tenant_id=claims["tid"])

    def check_tenant(self, caller: Caller, meeting_id: str | None) -> None:
        """A token of one tenant reaches no meeting of another, whatever the endpoint (403)."""
        meeting = self.meetings.get(meeting_id) if meeting_id else None
        if meeting is not None and meeting["tenant_id"] != caller.tenant_id:
            raise GraphError(403, "Forbidden", "Insufficient privileges to complete the operation: the online "
                                               "meeting belongs to another tenant than the token's.")

    # --- faults ----------------------------------------------------------------------------------

    def pick_fault(self, meeting_id: str | None) -> FaultRule | None:
        """First matching, still-armed fault rule for this request (consuming one use)."""
        for rule in self.faults.rules:
            if rule.remaining == 0:
                continue
            if rule.meeting_id != "*" and rule.meeting_id != meeting_id:
                continue
            if rule.probability < 1.0 and self.faults.rng.random() >= rule.probability:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule
        return None


def _load_keys(jwks: Mapping[str, Any]) -> dict[str, Any]:
    return {k.get("kid", ""): RSAAlgorithm.from_jwk(json.dumps(k))
            for k in jwks.get("keys", []) if k.get("kty") == "RSA"}


def _thread_id(meeting_id: str) -> str | None:
    try:
        decoded = base64.b64decode(meeting_id + "=" * (-len(meeting_id) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.rpartition("**")[2] or None


GRAPH_KEY = web.AppKey("graph", GraphEmulator)
