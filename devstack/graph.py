"""Microsoft Graph v1.0 emulator for the online-meeting endpoints the product uses."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import secrets
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import jwt
from aiohttp import web
from jwt.algorithms import RSAAlgorithm

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
AUDIENCES = ["https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"]
JOIN_URL_SCOPES = frozenset({"VirtualAppointment.Read", "VirtualAppointment.ReadWrite",
                             "OnlineMeetings.Read", "OnlineMeetings.ReadWrite"})
MEETING_SCOPES = frozenset({"OnlineMeetings.Read", "OnlineMeetings.ReadWrite"})
FAULT_STATUSES = {429, 500, 502, 503, 504, "hang"}
HANG_SECONDS = 120.0
TOKEN_CACHE_MAX = 50_000
JSON_CONTENT_TYPE = ("application/json;odata.metadata=minimal;odata.streaming=true;"
                     "IEEE754Compatible=false;charset=utf-8")
FILTER_RE = re.compile(r"^\s*joinWebUrl\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
FAULT_ERRORS: dict[int, tuple[str, str]] = {
    429: ("TooManyRequests", "Too many requests. Please retry after the time given in Retry-After."),
    500: ("generalException", "General exception while processing."),
    502: ("BadGateway", "The server received an invalid response from an upstream server."),
    503: ("serviceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The request timed out."),
}


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


@dataclass
class Caller:
    """The principal a verified access token speaks for."""

    oid: str
    upn: str | None
    scopes: frozenset[str]
    app_only: bool


class GraphEmulator:
    """State of the Graph emulator: meetings, token verification, faults and counters."""

    def __init__(self, meetings: list[dict[str, Any]], directory: Mapping[str, Any],
                 jwks_uri: str | Mapping[str, Any], issuer: str, ca_pem: Path | str | None) -> None:
        self.tenant_id: str = directory["tenant_id"]
        self.users = {u["oid"]: u for u in directory.get("users", [])}
        self._users_by_upn = {u["upn"].lower(): u for u in self.users.values()}
        self.issuer = issuer
        self.meetings: dict[str, dict[str, Any]] = {}
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
        organizer = self._oid_of(organizer)
        participants = [self._oid_of(p) for p in raw.get("participants", [])]
        thread = f"19:meeting_{secrets.token_hex(8)}@thread.v2"
        mid = raw.get("id") or base64.b64encode(f"1*{organizer}*0**{thread}".encode()).decode()
        join = raw.get("joinWebUrl") or (
            f"https://teams.microsoft.com/l/meetup-join/{thread.replace(':', '%3a').replace('@', '%40')}/0"
            f"?context=%7b%22Tid%22%3a%22{self.tenant_id}%22%7d")
        meeting = {**raw, "id": mid, "organizer": organizer, "participants": participants,
                   "subject": raw.get("subject", ""), "joinWebUrl": join}
        meeting.setdefault("virtualAppointmentJoinWebUrl",
                           f"https://visit.teams.microsoft.com/webrtc-svc/api/route?tid={self.tenant_id}"
                           f"&convId={thread}")
        self.meetings[mid] = meeting
        return meeting

    def _oid_of(self, ref: str) -> str:
        user = self.users.get(ref) or self._users_by_upn.get(ref.lower())
        return user["oid"] if user else ref

    def meeting_resource(self, m: Mapping[str, Any]) -> dict[str, Any]:
        """The onlineMeeting resource as Graph returns it."""
        def identity(oid: str, role: str) -> dict[str, Any]:
            user = self.users.get(oid, {})
            return {"upn": user.get("upn"), "role": role,
                    "identity": {"user": {"id": oid, "displayName": user.get("display_name"),
                                          "tenantId": self.tenant_id, "identityProvider": "AAD"}}}

        thread = _thread_id(m["id"])
        return {
            "id": m["id"], "subject": m["subject"], "joinWebUrl": m["joinWebUrl"],
            "creationDateTime": m.get("creationDateTime"), "startDateTime": m.get("startDateTime"),
            "endDateTime": m.get("endDateTime"), "isBroadcast": False,
            "allowedPresenters": "everyone", "allowMeetingChat": "enabled",
            "chatInfo": ({"threadId": thread, "messageId": "0", "replyChainMessageId": None}
                         if thread else None),
            "participants": {"organizer": identity(m["organizer"], "presenter"),
                             "attendees": [identity(p, "attendee") for p in m["participants"]]},
        }

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
        try:
            claims = jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCES, issuer=self.issuer,
                                options={"require": ["exp", "iss", "aud", "oid"]})
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
            return Caller(claims["oid"], None, frozenset(), app_only=True)
        upn = claims.get("upn") or claims.get("preferred_username")
        return Caller(claims["oid"], upn, frozenset(scp.split()), app_only=False)

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

# --- request handling ------------------------------------------------------------------------------


def _json(status: int, body: Any, headers: Mapping[str, str], content_type: str = JSON_CONTENT_TYPE
          ) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(),
                        headers={**headers, "Content-Type": content_type})


def _error_body(err: GraphError, request_id: str, client_request_id: str) -> dict[str, Any]:
    return {"error": {"code": err.code, "message": err.message, "innerError": {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id, "client-request-id": client_request_id}}}


def _parse_path(raw_path: str) -> tuple[str | None, list[str]]:
    """Split `/v1.0/users/{id}/...` or `/v1.0/me/...` into (user ref or None for me, rest)."""
    parts = [unquote(p) for p in raw_path.split("/") if p]
    if not parts or parts[0] != "v1.0":
        raise GraphError(400, "BadRequest", "Invalid version: only v1.0 is emulated.")
    if len(parts) >= 2 and parts[1].lower() == "me":
        return None, parts[2:]
    if len(parts) >= 3 and parts[1].lower() == "users":
        return parts[2], parts[3:]
    segment = parts[1] if len(parts) > 1 else ""
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def _check_path_user(caller: Caller, user_ref: str | None) -> str:
    if user_ref is not None and user_ref != caller.oid and user_ref.lower() != (caller.upn or "").lower():
        raise GraphError(403, "Forbidden",
                         "Insufficient privileges to complete the operation: a delegated caller can only "
                         "access their own online meetings.")
    return caller.oid


def _require_scopes(caller: Caller, accepted: frozenset[str]) -> None:
    if caller.app_only:
        raise GraphError(403, "Forbidden",
                         "Application permissions are not supported for this API. "
                         "Use delegated permissions (sign in a user) instead.")
    if not caller.scopes & accepted:
        raise GraphError(403, "Forbidden",
                         "Insufficient privileges to complete the operation. "
                         f"Required scopes: {', '.join(sorted(accepted))}.")


def _involved(meeting: Mapping[str, Any], oid: str) -> bool:
    return meeting["organizer"] == oid or oid in meeting["participants"]


async def _apply_fault(emu: GraphEmulator, meeting_id: str | None) -> None:
    rule = emu.pick_fault(meeting_id)
    if rule is None:
        return
    if rule.status == "hang":
        await asyncio.sleep(HANG_SECONDS)
        raise GraphError(504, *FAULT_ERRORS[504])
    status = int(rule.status)
    headers = {}
    if status in (429, 503) and rule.retry_after is not None:
        headers["Retry-After"] = str(rule.retry_after)
    raise GraphError(status, *FAULT_ERRORS[status], headers=headers)


async def _serve(request: web.Request, emu: GraphEmulator, stats_key: dict[str, str]) -> tuple[int, Any]:
    user_ref, rest = _parse_path(request.rel_url.raw_path)
    if request.method != "GET":
        raise GraphError(405, "MethodNotAllowed", f"The method {request.method} is not allowed here.")
    names = [r.lower() for r in rest]
    is_join = (len(names) == 3 and names[0] == "onlinemeetings"
               and names[2] in ("getvirtualappointmentjoinweburl", "getvirtualappointmentjoinweburl()"))
    is_list = names == ["onlinemeetings"]
    is_get = len(names) == 2 and names[0] == "onlinemeetings"
    if not (is_join or is_list or is_get):
        segment = rest[-1] if rest else (user_ref or "me")
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
    meeting_id = rest[1] if (is_join or is_get) else None
    if meeting_id:
        stats_key["meeting"] = meeting_id

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
    caller = emu.caller(await emu.verify(token))
    stats_key["user"] = caller.upn or caller.oid
    await _apply_fault(emu, meeting_id)

    if is_list:
        _require_scopes(caller, MEETING_SCOPES)
        oid = _check_path_user(caller, user_ref)
        raw_filter = request.query.get("$filter")
        match = FILTER_RE.match(raw_filter or "")
        if match is None:
            expected = "Filter expression expected - /onlineMeetings?$filter=JoinWebUrl eq 'joinWebUrl'."
            raise GraphError(400, "BadRequest",
                             expected if raw_filter is None else f"Unsupported filter: {raw_filter}")
        url = match.group(1).replace("''", "'")
        found = [emu.meeting_resource(m) for m in emu.meetings.values()
                 if m["joinWebUrl"] == url and _involved(m, oid)]
        return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{oid}')/onlineMeetings",
                     "value": found}

    _require_scopes(caller, JOIN_URL_SCOPES if is_join else MEETING_SCOPES)
    oid = _check_path_user(caller, user_ref)
    assert meeting_id is not None
    meeting = emu.meetings.get(meeting_id)
    if meeting is None:
        raise GraphError(404, "NotFound", "The requested resource does not exist. (online meeting not found)")
    if not _involved(meeting, oid):
        raise GraphError(403, "Forbidden",
                         "Insufficient privileges to complete the operation: the caller is neither the "
                         "organizer nor a participant of this meeting.")
    if is_get:
        return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{oid}')/onlineMeetings/$entity",
                     **emu.meeting_resource(meeting)}
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#Edm.String",
                 "value": meeting["virtualAppointmentJoinWebUrl"]}


async def graph_handler(request: web.Request) -> web.Response:
    """Entry point for every non-admin Graph request: latency, dispatch, error shape and counters."""
    emu = request.app[GRAPH_KEY]
    emu.stats.requests += 1
    request_id = str(uuid.uuid4())
    client_request_id = request.headers.get("client-request-id") or request_id
    headers = {"request-id": request_id, "client-request-id": client_request_id}
    stats_key: dict[str, str] = {}
    if emu.faults.latency_ms > 0:
        await asyncio.sleep(emu.faults.latency_ms / 1000)
    try:
        status, body = await _serve(request, emu, stats_key)
        response = _json(status, body, headers)
    except GraphError as err:
        if err.status == 401:
            headers["WWW-Authenticate"] = ('Bearer realm="", authorization_uri='
                                           '"https://login.microsoftonline.com/common/oauth2/authorize", '
                                           'client_id="00000003-0000-0000-c000-000000000000"')
        response = _json(err.status, _error_body(err, request_id, client_request_id),
                         {**headers, **err.headers}, "application/json")
    emu.stats.by_status[str(response.status)] += 1
    if "meeting" in stats_key:
        emu.stats.by_meeting[stats_key["meeting"]] += 1
    if "user" in stats_key:
        emu.stats.by_user[stats_key["user"]] += 1
    return response


# --- admin -----------------------------------------------------------------------------------------

@web.middleware
async def loopback_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin endpoints have no auth, so only loopback callers may use them."""
    remote = request.remote or ""
    if request.path.startswith("/_admin") and not (remote == "::1" or remote.startswith("127.")):
        return web.json_response({"error": "forbidden"}, status=403)
    return await handler(request)


def _parse_faults(body: Mapping[str, Any]) -> FaultConfig:
    rules = []
    for raw in body.get("rules", []):
        status = raw.get("status")
        if status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of 429, 500, 502, 503, 504, 'hang'; got {status!r}")
        times = raw.get("times")
        retry_after = raw.get("retry_after")
        rules.append(FaultRule(meeting_id=str(raw.get("meeting_id", "*")), status=status,
                               retry_after=None if retry_after is None else int(retry_after),
                               remaining=None if times is None else int(times),
                               probability=float(raw.get("probability", 1.0))))
    seed = body.get("seed")
    return FaultConfig(latency_ms=float(body.get("latency_ms", 0) or 0), rules=rules, seed=seed,
                       rng=random.Random(seed))


async def admin_put_faults(request: web.Request) -> web.Response:
    """Replace the fault configuration."""
    emu = request.app[GRAPH_KEY]
    try:
        emu.faults = _parse_faults(await request.json())
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return await admin_get_faults(request)


async def admin_get_faults(request: web.Request) -> web.Response:
    """Current fault configuration, with remaining uses per rule."""
    f = request.app[GRAPH_KEY].faults
    return web.json_response({"latency_ms": f.latency_ms, "seed": f.seed,
                              "rules": [r.as_dict() for r in f.rules]})


async def admin_add_meetings(request: web.Request) -> web.Response:
    """Add one meeting or a list of meetings."""
    emu = request.app[GRAPH_KEY]
    body = await request.json()
    try:
        added = [emu.add_meeting(m) for m in (body if isinstance(body, list) else [body])]
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(added if isinstance(body, list) else added[0], status=201)


async def admin_list_meetings(request: web.Request) -> web.Response:
    """All stored meetings."""
    return web.json_response(list(request.app[GRAPH_KEY].meetings.values()))


async def admin_delete_meeting(request: web.Request) -> web.Response:
    """Remove a meeting (404 if unknown)."""
    removed = request.app[GRAPH_KEY].meetings.pop(request.match_info["id"], None)
    return web.json_response({"deleted": removed is not None}, status=200 if removed else 404)


async def admin_stats(request: web.Request) -> web.Response:
    """Request counters."""
    s = request.app[GRAPH_KEY].stats
    return web.json_response({"requests": s.requests, "by_status": dict(s.by_status),
                              "by_meeting": dict(s.by_meeting), "by_user": dict(s.by_user)})


async def admin_reset(request: web.Request) -> web.Response:
    """Reset counters and faults (meetings stay)."""
    emu = request.app[GRAPH_KEY]
    emu.stats = GraphStats()
    emu.faults = FaultConfig()
    return web.json_response({"ok": True})


def create_graph_app(meetings: list[dict[str, Any]], directory: Mapping[str, Any],
                     jwks_uri: str | Mapping[str, Any], issuer: str,
                     ca_pem: Path | str | None = None) -> web.Application:
    """Build the Graph emulator aiohttp app; `jwks_uri` is a URL fetched over HTTPS or a JWKS dict."""
    app = web.Application(middlewares=[loopback_admin])
    emu = GraphEmulator(meetings, directory, jwks_uri, issuer, ca_pem)
    app[GRAPH_KEY] = emu

    async def _close(_: web.Application) -> None:
        await emu.close()

    app.on_cleanup.append(_close)
    app.router.add_get("/_admin/stats", admin_stats)
    app.router.add_post("/_admin/reset", admin_reset)
    app.router.add_get("/_admin/faults", admin_get_faults)
    app.router.add_put("/_admin/faults", admin_put_faults)
    app.router.add_get("/_admin/meetings", admin_list_meetings)
    app.router.add_post("/_admin/meetings", admin_add_meetings)
    app.router.add_delete("/_admin/meetings/{id}", admin_delete_meeting)
    app.router.add_route("*", "/{tail:.*}", graph_handler)
    return app
