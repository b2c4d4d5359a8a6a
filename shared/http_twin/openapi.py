"""The HTTP twin's OpenAPI 3.1 document, served by the app."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from shared.common.ids import GUID_PATTERN
from shared.problems import PROBLEM_JSON

JOIN_URL_ROUTE = "join-url"
# The bearer-only twin: anonymous at the host (no function key), the function itself demands the token.
ME_JOIN_URL_ROUTE = "me/join-url"
OPENAPI_ROUTE = "openapi.json"
APPOINTMENT_ROUTE = "appointments/{appointmentId}"


def _problem_response(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                               "schema": {"type": "integer", "minimum": 1}}}
    return response


# What the twin accepts, stated in the document so that clients (and schemathesis) see the same rules:
# an organizer is a GUID or a UPN; a meeting id has a visible character and no CR, LF or NUL. Surrounding
# whitespace is ignored, as the twin strips it. Whitespace is spelled out (Python's str.isspace(), which
# strip() and the twin's checks use) because `\s` differs between regex dialects (ECMA vs Python).
_WS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_UPN_CHAR = rf"[^@/\\\x00{_WS}]"
ORGANIZER_PATTERN = rf"^[{_WS}]*(?:{GUID_PATTERN}|{_UPN_CHAR}+@{_UPN_CHAR}+\.{_UPN_CHAR}+)[{_WS}]*$"
TEXT_PATTERN = rf"^[{_WS}]*[^\r\n\x00]*[^\x00{_WS}][^\r\n\x00]*[{_WS}]*$"
ONE_OF_RULE = "Give exactly one of meetingId or joinWebUrl (400 otherwise)."


def _text(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _lookup_operation(*, bearer: bool) -> dict[str, Any]:
    organizer = ("The signed-in user's object id or UPN; defaults to the signed-in user, and may name no one "
                 "else." if bearer else "Organizer's Entra object id or UPN.")
    operation: dict[str, Any] = {
        "operationId": "getMyJoinUrl" if bearer else "getJoinUrl",
        "summary": ("Get the join URL of a meeting of the signed-in user (On-Behalf-Of)" if bearer
                    else "Get the virtual-appointment join URL of a meeting"),
        "parameters": [
            {"name": "organizer", "in": "query", "required": not bearer,
             "schema": _text(organizer, minLength=1, maxLength=256, pattern=ORGANIZER_PATTERN)},
            {"name": "meetingId", "in": "query", "required": False,
             "schema": _text(f"Online meeting id. {ONE_OF_RULE}", minLength=1, maxLength=2048,
                             pattern=TEXT_PATTERN)},
            {"name": "joinWebUrl", "in": "query", "required": False,
             "schema": _text(f"The meeting's Teams joinWebUrl (https). {ONE_OF_RULE}", format="uri",
                             pattern=TEXT_PATTERN,
                             maxLength=2048)},
        ],
        "responses": {
            "200": {"description": "The join URL.", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JoinUrl"}}}},
            "400": _problem_response("The query is invalid."),
            "401": (_problem_response("Missing, expired or invalid bearer token (see WWW-Authenticate).")
                    if bearer else {"description": "Missing or wrong function key (answered by the host)."}),
            "403": _problem_response("The token lacks the scope, names another organizer, or Graph refused access."
                                     if bearer else "The organizer is not connected, or Graph refused access."),
            "404": _problem_response("No such meeting for this organizer."),
            "429": _problem_response("Graph is throttling; retry later.", retry_after=True),
            "500": _problem_response("Unexpected error."),
            "502": _problem_response("Graph failed or timed out."),
            "503": _problem_response("The identity platform is unavailable.", retry_after=True),
        },
    }
    if bearer:
        operation["security"] = [{"entraBearer": []}]
    return operation


def _nullable(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], "description": description, **extra}


def _appointment_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["appointmentId", "organizer", "onlineMeetingId", "joinUrl", "organizerJoinUrl", "startDateTime",
                     "endDateTime", "meetingCreatedByApp", "status"],
        "properties": {
            "appointmentId": {"type": "string"},
            "organizer": {"type": "string"},
            "tenantId": _nullable("string", "The organizer's tenant, when known."),
            "onlineMeetingId": _nullable("string", "The appointment's Teams meeting."),
            "joinUrl": _nullable("string", "The client's virtual-appointment link; null once cancelled.",
                                 format="uri"),
            "organizerJoinUrl": _nullable("string", "The meeting's joinWebUrl, for staff; null once cancelled or "
                                          "when not known.", format="uri"),
            "startDateTime": _nullable("string", "Start, when known.", format="date-time"),
            "endDateTime": _nullable("string", "End, when known.", format="date-time"),
            "subject": _nullable("string", "The meeting's subject, when given."),
            "meetingCreatedByApp": {"type": "boolean", "description": "Whether the app created (owns) the meeting."},
            "status": {"type": "string", "enum": ["scheduled", "cancelled"]},
            "lastEventId": _nullable("string", "The last event applied."),
            "lastEventType": _nullable("string", "Its type."),
            "updatedAt": _nullable("string", "When the record last changed.", format="date-time"),
        },
    }


def _host_404(response: dict[str, Any]) -> dict[str, Any]:
    """A path the host cannot route to the function (an id with a control character, say) gets the host's
    own plain-text 404, before the app sees it."""
    response["description"] += " An id the host cannot route is answered by the host itself, in plain text."
    response["content"]["text/plain"] = {"schema": {"type": "string"}}
    return response


def _appointment_operation() -> dict[str, Any]:
    return {
        "operationId": "getAppointment",
        "summary": "An appointment's links, times and status, from the app's appointment record (no Graph call)",
        "parameters": [{"name": "appointmentId", "in": "path", "required": True,
                        # A slash or a control character cannot travel in one path segment: such ids are
                        # looked up through join-urls records instead.
                        "schema": _text("The scheduling system's appointment id (no '/' and no control "
                                        "characters).", minLength=1, maxLength=256,
                                        pattern=r"^[^\x00-\x1f\x7f-\x9f/]+$")}],
        "responses": {
            "200": {"description": "The appointment.", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Appointment"}}}},
            "400": _problem_response("The appointment id is invalid."),
            "401": {"description": "Missing or wrong function key (answered by the host)."},
            "404": _host_404(_problem_response("No appointment with that id has been processed.")),
            "500": _problem_response("Unexpected error."),
            "503": _problem_response("The appointment records could not be read.", retry_after=True),
        },
    }


@lru_cache(maxsize=1)
def openapi_document() -> str:
    """The document as JSON text (built once)."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Virtual appointment join links",
            "version": "1.0.0",
            "description": "Ad-hoc lookup of a Microsoft Teams virtual appointment's join URL. Graph is called "
                           "with the organizer's delegated credential (getVirtualAppointmentJoinWebUrl supports "
                           "delegated permissions only).",
        },
        "servers": [{"url": "/api"}],
        "security": [{"functionKeyHeader": []}, {"functionKeyQuery": []}],
        "paths": {
            f"/{JOIN_URL_ROUTE}": {"get": _lookup_operation(bearer=False)},
            f"/{ME_JOIN_URL_ROUTE}": {"get": _lookup_operation(bearer=True)},
            f"/{APPOINTMENT_ROUTE}": {"get": _appointment_operation()},
        },
        "components": {
            "securitySchemes": {
                "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
                "entraBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                "description": "Microsoft Entra access token for this API (audience: the app's "
                                               "Application ID URI, scope access_as_user)."},
            },
            "schemas": {
                "JoinUrl": {
                    "type": "object",
                    "required": ["organizer", "onlineMeetingId", "joinUrl", "resolvedAt"],
                    "properties": {
                        "organizer": {"type": "string"},
                        "onlineMeetingId": {"type": "string"},
                        "joinUrl": {"type": "string", "format": "uri"},
                        "organizerJoinUrl": _nullable("string", "The meeting's joinWebUrl, for staff (known when "
                                                      "the lookup was by joinWebUrl).", format="uri"),
                        "resolvedAt": {"type": "string", "format": "date-time"},
                    },
                },
                "Appointment": _appointment_schema(),
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "reason"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "reason": {"type": "string", "description": "Stable reason code."},
                        "instance": {"type": "string"},
                    },
                },
            },
        },
    }
    return json.dumps(doc, indent=2)
