"""Every setting the app reads, declared once: name, meaning, default, whether required or secret.

README's settings table, local.settings.sample.json and the Bicep app settings are checked against this
registry by tests, so adding a setting means adding it here (and reading it in settings.load_settings).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SettingSpec:
    """One environment setting the app reads: its name, whether it must be set, and what it means."""

    name: str
    description: str
    required: bool = False
    default: str | None = None
    secret: bool = False
    dev_only: bool = False


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("AzureWebJobsStorage", "Storage connection for every queue, blob and table the app uses "
                "(a connection string locally; identity-based `AzureWebJobsStorage__*` settings in Azure).",
                required=True, secret=True),
    SettingSpec("APP_ENVIRONMENT", "`production` or `development`. Development relaxes checks that only "
                "make sense against the local stack.", default="production"),
    SettingSpec("GRAPH_BASE_URL", "Microsoft Graph base URL including the version segment.",
                default="https://graph.microsoft.com/v1.0"),
    SettingSpec("GRAPH_TIMEOUT_SECONDS", "Per-request timeout for Graph calls; a timeout is transient.",
                default="10"),
    SettingSpec("ENTRA_AUTHORITY", "Microsoft Entra authority host URL.",
                default="https://login.microsoftonline.com"),
    SettingSpec("ENTRA_TENANT_ID", "Directory (tenant) id (a GUID) of the tenant the app is registered in: the "
                "organizers' tenant in single-tenant mode, the app's home tenant in multi-tenant mode.", required=True),
    SettingSpec("ENTRA_CLIENT_ID", "Application (client) id of the app registration.", required=True),
    SettingSpec("ENTRA_TENANCY", "`single`: organizers of ENTRA_TENANT_ID only, signed in through that tenant. "
                "`multi`: organizers of every tenant on ENTRA_ALLOWED_TENANTS, signed in through the "
                "`organizations` authority (the app registration must be multi-tenant).", default="single"),
    SettingSpec("ENTRA_ALLOWED_TENANTS", "Comma-separated tenant ids (GUIDs) whose organizers may connect and "
                "whose bearer tokens the HTTP twin accepts. Required with ENTRA_TENANCY=multi (an empty list is "
                "refused, never read as everyone); with `single` it may only name ENTRA_TENANT_ID."),
    SettingSpec("ENTRA_APP_CREDENTIAL", "How the app proves itself to Entra when it redeems and refreshes "
                "organizers' delegated tokens: `client_secret` (ENTRA_CLIENT_SECRET), `certificate` "
                "(ENTRA_CLIENT_CERTIFICATE) or `federated` (a token of the app's own managed identity, trusted by "
                "a federated identity credential on the app registration: no secret at all).",
                default="client_secret"),
    SettingSpec("ENTRA_CLIENT_SECRET", "Client secret of the app registration (a Key Vault reference in Azure). "
                "Required with ENTRA_APP_CREDENTIAL=client_secret.", secret=True),
    SettingSpec("ENTRA_CLIENT_CERTIFICATE", "The app registration's certificate with its private key: PEM (key "
                "and certificate), or base64 PKCS#12 as a Key Vault certificate's secret holds it (a Key Vault "
                "reference in Azure). Required with ENTRA_APP_CREDENTIAL=certificate.", secret=True),
    SettingSpec("ENTRA_MANAGED_IDENTITY_CLIENT_ID", "ENTRA_APP_CREDENTIAL=federated: client id of the "
                "user-assigned managed identity whose token is the app's credential (its principal id is the "
                "federated credential's subject). Empty: the system-assigned identity."),
    SettingSpec("CREDENTIAL_MODE", "How the app obtains a delegated token for an organizer: `vault` (each "
                "organizer connects once; refresh tokens live in the token vault) or `dev_password` (local stack "
                "test users only). App-only modes are refused: this Graph API is delegated-only.",
                default="vault"),
    SettingSpec("DEV_USERS_FILE", "`dev_password` mode: JSON file with the local test users.", dev_only=True),
    SettingSpec("TOKEN_VAULT_CONTAINER", "Private blob container (in the AzureWebJobsStorage account) holding one "
                "MSAL token cache per connected organizer, and the one-time sign-in flows of the connect page.",
                default="token-vault"),
    SettingSpec("AUTH_REDIRECT_URI", "Redirect URI of the connect page's sign-in, registered on the app "
                "registration: `https://<host>/api/auth/callback`. Defaults to the app's own host name "
                "(`WEBSITE_HOSTNAME`, set by the platform); set it for a custom domain. http only to loopback in "
                "development.", default="https://{WEBSITE_HOSTNAME}/api/auth/callback"),
    SettingSpec("AUTH_CONNECT_LOOKUP_SCOPE", "`true`: the connect page and device-code command also ask for "
                "OnlineMeetings.Read, needed only for events that carry a joinWebUrl instead of a meeting id. "
                "`false`: VirtualAppointment.Read alone (least privilege).", default="true"),
    SettingSpec("API_AUDIENCE", "Audience of bearer tokens for the HTTP twin (the app's Application ID URI). "
                "The bare client id is accepted too (v2.0 tokens carry it).", default="api://{ENTRA_CLIENT_ID}"),
    SettingSpec("API_REQUIRED_SCOPE", "Delegated scope a bearer token must carry in `scp` to call the HTTP twin.",
                default="access_as_user"),
    SettingSpec("KEEPALIVE_IDLE_HOURS", "The keep-alive timer refreshes every organizer whose refresh token has "
                "not been used for this long, so an idle connection never reaches its 90-day inactivity limit.",
                default="72"),
    SettingSpec("KEEPALIVE_SCHEDULE", "NCRONTAB schedule of the keep-alive timer (six fields, seconds first).",
                default="0 0 */6 * * *"),
    SettingSpec("TLS_CA_BUNDLE", "Extra CA certificate (PEM) to trust, for the local emulators' HTTPS.",
                dev_only=True),
    SettingSpec("THROTTLE_INLINE_MAX_SECONDS", "A Graph 429 whose Retry-After is at most this many seconds "
                "is retried inside the invocation; a longer one re-enqueues the event.", default="2"),
    SettingSpec("THROTTLE_MAX_REQUEUES", "How often one event may be re-enqueued for throttling before "
                "it is treated as a transient failure (and so ends in the poison queue).", default="5"),
    SettingSpec("WEBHOOK_URL", "Default webhook destination (https; plain http only to loopback in development). "
                "Optional: without it, only events with an allow-listed callbackUrl can be delivered and the rest "
                "are dead-lettered with reason `no_destination`, ready to replay once it is set."),
    SettingSpec("WEBHOOK_SECRET", "Standard Webhooks signing secret `whsec_<base64>` (24-64 bytes); two, "
                "comma-separated, during rotation (every delivery is signed with both).",
                required=True, secret=True),
    SettingSpec("WEBHOOK_ALLOWED_HOSTS", "Hosts an event's callbackUrl may name: comma-separated exact host "
                "names or `*.suffix` wildcards. Empty: callbackUrl is never used."),
    SettingSpec("WEBHOOK_CONNECT_TIMEOUT_SECONDS", "Webhook connect timeout; a timeout is transient.", default="5"),
    SettingSpec("WEBHOOK_READ_TIMEOUT_SECONDS", "Webhook response timeout; a timeout is transient.", default="10"),
    SettingSpec("WEBHOOK_MAX_ATTEMPTS", "Backed-off delivery attempts before the host's own retries and then "
                "`webhook-outbox-poison` take over.", default="8"),
    SettingSpec("WEBHOOK_RETRY_BASE_SECONDS", "First retry delay; each later one is three times longer, at most "
                "an hour (10 s base: 10 s, 30 s, 1.5 min, 4.5 min, 13.5 min, 40 min, 1 h).", default="10"),
    SettingSpec("APPLICATIONINSIGHTS_CONNECTION_STRING", "Application Insights connection string. Set: traces, "
                "logs with custom dimensions and metrics are exported (from the first invocation on). Unset: "
                "nothing is attempted."),
    SettingSpec("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "`Authorization=AAD;ClientId=<identity client id>`: "
                "send telemetry with the managed identity (the resource has local authentication off)."),
    SettingSpec("QUEUE_METRICS_SCHEDULE", "NCRONTAB schedule of the queue_metrics timer, which reports every "
                "queue's depth (poison, rejected and dead-letter included) as the `queue_depth` metric.",
                default="0 */5 * * * *"),
    SettingSpec("IDEMPOTENCY_TABLE", "Table (in the AzureWebJobsStorage account) holding one record per "
                "processed event id, so a redelivered event never calls Graph twice.", default="idempotency"),
    SettingSpec("MESSAGE_OVERFLOW_CONTAINER", "Private blob container (in the AzureWebJobsStorage account) keeping "
                "whole any original message too big to copy into its rejection or dead-letter record (queue "
                "messages hold at most 64 KiB); the record points at it and `python -m shared.replay` reads it "
                "back.", default="message-overflow"),
    SettingSpec("IDEMPOTENCY_WINDOW_HOURS", "How long a processed event id is remembered.", default="24"),
    SettingSpec("IDEMPOTENCY_STALE_CLAIM_SECONDS", "An event claimed this long ago and never finished belongs to "
                "a worker that died (crash, scale-in, timeout): another worker takes it over. Must stay above the "
                "longest invocation (four Graph timeouts, the throttle budget and 3 s waiting for an appointment's "
                "lease); it is also how long a dead worker's lease on an appointment lasts. A lower value only speeds "
                "up recovery after a crash.", default="300"),
    SettingSpec("MEETING_MANAGEMENT", "`true`: the app owns the Teams meeting of each appointment. An event without "
                "a meeting gets one (createOrGet as the organizer), a reschedule updates the meetings the app created, "
                "a cancellation deletes them; the connect page and device-code command also ask for "
                "OnlineMeetings.ReadWrite. `false`: every created event must carry a meeting (`meeting_required`).",
                default="false"),
    SettingSpec("APPOINTMENTS_TABLE", "Table (in the AzureWebJobsStorage account) holding one record per appointment: "
                "its meeting, whether the app created it, the last change applied, its status.",
                default="appointments"),
    SettingSpec("CLIENT_SMS", "`true`: clients with a phone number get Teams Premium SMS (confirmation, reschedule, "
                "cancellation); the connect page and device-code command also ask for "
                "VirtualAppointmentNotification.Send. An SMS failure never fails the join link.", default="false"),
    SettingSpec("CLIENT_SMS_REMINDER", "`mins15`: with CLIENT_SMS on, also ask Teams to text clients a reminder 15 "
                "minutes before the appointment (the one lead time Graph offers). `none`: no reminder.",
                default="none"),
    SettingSpec("ATTENDANCE_REPORTS", "`true`: after each appointment ends (plus ATTENDANCE_GRACE_MINUTES) the app "
                "reads its meeting's attendance reports as the organizer and sends `appointment.attendance` (attended, "
                "client_no_show, staff_no_show, nobody_joined, or attendance_unavailable); the connect page and "
                "device-code command also ask for OnlineMeetingArtifact.Read.All. Never affects the join link.",
                default="false"),
    SettingSpec("ATTENDANCE_GRACE_MINUTES", "How long after an appointment's end its attendance is first read (Graph "
                "makes a report when a meeting session ends, and a session may overrun).", default="15"),
    SettingSpec("ATTENDANCE_WAIT_HOURS", "How long after the first read a missing report (or a Graph failure) is "
                "retried, with back-off, before the appointment is reported `attendance_unavailable`.",
                default="24"),
    SettingSpec("WEBHOOK_STALE_CLAIM_SECONDS", "A webhook delivery claimed this long ago and never finished "
                "belongs to a worker that died mid-POST: another worker delivers it again (same webhook-id). Must "
                "stay above the webhook connect plus read timeouts.", default="120"),
    SettingSpec("CALCOM_WEBHOOK_SECRET", "Secret of the Cal.com webhook that posts to /api/intake/calcom (checked "
                "against X-Cal-Signature-256). Unset: that intake answers 404.", secret=True),
    SettingSpec("CALENDLY_WEBHOOK_SIGNING_KEY", "Signing key of the Calendly webhook subscription that posts to "
                "/api/intake/calendly (checked against Calendly-Webhook-Signature). Unset: that intake answers 404.",
                secret=True),
    SettingSpec("INTAKE_WEBHOOK_SECRET", "Standard Webhooks secret `whsec_<base64>` of a scheduler posting contract-v1 "
                "events to /api/intake/standard-webhooks; two, comma-separated, during rotation. Unset: that intake "
                "answers 404.", secret=True),
    SettingSpec("INTAKE_ORGANIZER_MAP", "JSON object mapping a scheduler's host to a Teams organizer (UPN or object "
                "id): keys are host e-mail addresses, `calcom:event-type:<id or slug>`, `calendly:event-type:<event "
                "type URI>`, or `*` for every booking. Checked in that order, except `*`: before it, a host who is "
                "a connected organizer (by UPN) and hosts in INTAKE_ORGANIZER_DOMAINS are their own organizer; a "
                "host nothing maps is refused with 422."),
    SettingSpec("INTAKE_ORGANIZER_DOMAINS", "Comma-separated e-mail domains whose scheduler hosts sign in to Teams "
                "with that same address (their e-mail is their UPN)."),
)

SPECS_BY_NAME = {spec.name: spec for spec in SETTINGS}


def setting_default(name: str) -> str:
    """The registry's default of a setting (for code that runs without load_settings: tests, tools)."""
    default = SPECS_BY_NAME[name].default
    if default is None:
        raise KeyError(f"setting {name} has no default")
    return default
