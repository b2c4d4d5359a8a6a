"""The app's OpenAPI 3.1 document (the HTTP twin and the webhook intakes), served by the app.

Its schemas are the published contracts (contracts/schemas), embedded when the document is first built.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from shared.common.ids import GUID_PATTERN
from shared.contracts import openapi_components
from shared.intake.http import CALCOM_ROUTE, CALENDLY_ROUTE, STANDARD_ROUTE
from shared.problems import PROBLEM_JSON
from shared.version import VERSION

JOIN_URL_ROUTE = "join-url"
# The bearer-only twin: anonymous at the host (no function key), the function itself demands the token.
ME_JOIN_URL_ROUTE = "me/join-url"
OPENAPI_ROUTE = "openapi.json"
# The id in the path, or (omitted) in the query: `?appointmentId=` carries every id, slashes included. Azure's
# host decodes %2F before it matches routes, so an id with a slash (a Calendly invitee URI) cannot travel in a
# path segment, encoded or not (Azure/azure-functions-host#9290, #3998, #5619).
APPOINTMENT_ROUTE = "appointments/{appointmentId?}"
APPOINTMENT_PATH = "appointments/{appointmentId}"
APPOINTMENT_QUERY_PATH = "appointments"


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
TENANT_PATTERN = rf"^[{_WS}]*(?:{GUID_PATTERN})?[{_WS}]*$"
ONE_OF_RULE = "Give exactly one of meetingId or joinWebUrl (400 otherwise)."


def _text(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _lookup_operation(*, bearer: bool) -> dict[str, Any]:
    organizer = ("The signed-in user's object id or UPN; defaults to the signed-in user, and may name no one "
                 "else." if bearer else "Organizer's Entra object id or UPN.")
    tenant = ("The signed-in user's tenant id; defaults to the token's tenant, and may name no other (403)."
              if bearer else "The organizer's tenant id (GUID). Optional; when given, the organizer must belong to "
                             "it (403 organizer_not_connected otherwise).")
    operation: dict[str, Any] = {
        "operationId": "getMyJoinUrl" if bearer else "getJoinUrl",
        "tags": ["join-url"],
        "description": ("The caller's Entra token is exchanged On-Behalf-Of, so Graph sees the caller." if bearer
                        else "Server-to-server, with a function key: Graph is called with the organizer's "
                             "connected (delegated) credential."),
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
            {"name": "tenantId", "in": "query", "required": False,
             "schema": _text(tenant, maxLength=64, pattern=TENANT_PATTERN)},
        ],
        "responses": {
            "200": {"description": "The join URL.", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JoinUrlLookup"}}}},
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


def _intake_operation(operation_id: str, summary: str, body_schema: str, signature_header: str,
                      signature_rule: str) -> dict[str, Any]:
    headers = [{"name": signature_header, "in": "header", "required": True,
                "schema": _text(signature_rule, minLength=1)}]
    if signature_header == "webhook-signature":
        headers += [{"name": "webhook-id", "in": "header", "required": True, "schema": _text("Message id.")},
                    {"name": "webhook-timestamp", "in": "header", "required": True,
                     "schema": _text("Unix seconds; older than 5 minutes is refused.")}]
    accepted = {"application/json": {"schema": {"$ref": "#/components/schemas/IntakeAccepted"}}}
    return {
        "operationId": operation_id,
        "tags": ["intake"],
        "summary": summary,
        "description": "Verifies the sender's signature, translates the delivery to a contract-v1 event and "
                       "writes it to the appointments queue; 2xx only once it is there.",
        "parameters": headers,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{body_schema}"}}}},
        "responses": {
            "200": {"description": "Genuine, but nothing to enqueue: a trigger the app does not use (whatever its "
                                   "shape), Cal.com's request-reschedule cancel, the cancel half of a Calendly "
                                   "reschedule, or a late retry of a change its booking chain has moved past.",
                    "content": accepted},
            "202": {"description": "The event is on the appointments queue (when a Calendly booking chain is "
                                   "folded, several events are; the body names the first).", "content": accepted},
            "400": _problem_response("The body cannot be mapped to a contract-v1 event."),
            "401": _problem_response("Missing, bad or stale signature (or, from the host, a missing function "
                                     "key)."),
            "404": _problem_response("This intake is off (its secret is not configured)."),
            "413": _problem_response("The body is too large."),
            "422": _problem_response("The booking's host maps to no Teams organizer."),
            "500": {"description": "The event could not be enqueued; the sender should retry."},
        },
    }


def _host_404(response: dict[str, Any]) -> dict[str, Any]:
    """A path the host cannot route to the function (an id with a control character, say) gets the host's
    own plain-text 404, before the app sees it."""
    response["description"] += " An id the host cannot route is answered by the host itself, in plain text."
    response["content"]["text/plain"] = {"schema": {"type": "string"}}
    return response


def _appointment_operation(*, in_query: bool) -> dict[str, Any]:
    if in_query:
        parameter = {"name": "appointmentId", "in": "query", "required": True,
                     "description": "Any appointment id, percent-encoded as a query value: the form for ids with "
                                    "a '/' (Calendly-derived ids are invitee URIs), which no path segment can "
                                    "carry through Azure's host (it decodes %2F before matching routes).",
                     "schema": _text("The scheduling system's appointment id (no control characters).",
                                     minLength=1, maxLength=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")}
    else:
        parameter = {"name": "appointmentId", "in": "path", "required": True,
                     "schema": _text("The scheduling system's appointment id (no '/' and no control characters; "
                                     "an id with a '/' goes in the query: GET /appointments?appointmentId=).",
                                     minLength=1, maxLength=256, pattern=r"^[^\x00-\x1f\x7f-\x9f/]+$")}
    return {
        "operationId": "getAppointmentByQuery" if in_query else "getAppointment",
        "tags": ["appointments"],
        "summary": "An appointment's links, times and status, from the app's appointment record (no Graph call)",
        "description": "What the app last applied to the appointment: its meeting, both links (null once "
                       "cancelled), times, status and whether the app created the meeting. Answered from the "
                       "appointment record, so it costs no Graph call and works while Graph is down.",
        "parameters": [parameter],
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
            "version": VERSION,
            "description": "Ad-hoc lookup of a Microsoft Teams virtual appointment's join URL (Graph is called "
                           "with the organizer's delegated credential: getVirtualAppointmentJoinWebUrl supports "
                           "delegated permissions only), and the webhook intakes for schedulers. The message "
                           "schemas are the published contracts; the queues are described by the AsyncAPI "
                           "document (contracts/asyncapi.yaml).",
        },
        "servers": [{"url": "/api"}],
        "tags": [{"name": "join-url", "description": "The HTTP twin: ad-hoc join-URL lookups."},
                 {"name": "intake", "description": "Webhook intakes: scheduler bookings in, contract-v1 events "
                                                   "onto the appointments queue."},
                 {"name": "appointments", "description": "Appointments as the app last applied them."}],
        "security": [{"functionKeyHeader": []}, {"functionKeyQuery": []}],
        "paths": {
            f"/{JOIN_URL_ROUTE}": {"get": _lookup_operation(bearer=False)},
            f"/{ME_JOIN_URL_ROUTE}": {"get": _lookup_operation(bearer=True)},
            f"/{CALCOM_ROUTE}": {"post": _intake_operation(
                "intakeCalcom", "Cal.com booking webhook (BOOKING_CREATED, _RESCHEDULED, _CANCELLED)",
                "CalcomWebhook", "X-Cal-Signature-256", "Hex HMAC-SHA256 of the raw body under the webhook secret.")},
            f"/{CALENDLY_ROUTE}": {"post": _intake_operation(
                "intakeCalendly", "Calendly invitee webhook (invitee.created, invitee.canceled)", "CalendlyWebhook",
                "Calendly-Webhook-Signature", "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.' + raw body>; "
                "older than 3 minutes is refused.")},
            f"/{STANDARD_ROUTE}": {"post": _intake_operation(
                "intakeStandardWebhooks", "Contract-v1 event from any Standard Webhooks sender", "AppointmentEvent",
                "webhook-signature", "Standard Webhooks 1.0 (with webhook-id and webhook-timestamp).")},


            f"/{APPOINTMENT_PATH}": {"get": _appointment_operation(in_query=False)},
            f"/{APPOINTMENT_QUERY_PATH}": {"get": _appointment_operation(in_query=True)},
        },
        "components": {
            "securitySchemes": {
                "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
                "entraBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                "description": "Microsoft Entra access token for this API (audience: the app's "
                                               "Application ID URI, scope access_as_user)."},
            },
            "schemas": openapi_components(),
        },
    }
    return json.dumps(doc, indent=2)
