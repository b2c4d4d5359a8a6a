"""The app's settings: one typed object, built from the environment and validated at start-up.

What each setting means and its default: shared/settings_registry.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared import settings_values as values
from shared.common.urls import is_allowed_url
from shared.common.vocabulary import MeetingKind
from shared.exceptions import SettingsError
from shared.settings_registry import SETTINGS, SettingSpec, setting_default

_DELEGATED_MODES = ("vault", "dev_password")
# How long an event waits inside its invocation for another worker's lease on its appointment.
LEASE_PATIENCE_SECONDS = 3.0
_APP_ONLY_MODES = ("managed_identity", "client_credentials", "client_secret", "app_only", "certificate")
TENANCIES = ("single", "multi")
APP_CREDENTIALS = ("client_secret", "certificate", "federated")
# MSAL's authority for signing in users of any work or school tenant (not personal accounts).
ORGANIZATIONS = "organizations"


@dataclass(frozen=True)
class StorageConnection:
    """The `AzureWebJobsStorage` connection: a connection string, or identity-based service URIs."""

    connection_string: str | None = None
    queue_service_uri: str | None = None
    blob_service_uri: str | None = None
    table_service_uri: str | None = None
    client_id: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str = "AzureWebJobsStorage") -> StorageConnection:
        """Read the connection the way the Functions host does (`NAME` or `NAME__*`)."""
        value = env.get(name, "").strip()
        if value:
            return cls(connection_string=value)
        account = env.get(f"{name}__accountName", "").strip()

        def uri(service: str) -> str | None:
            explicit = env.get(f"{name}__{service}ServiceUri", "").strip()
            return explicit or (f"https://{account}.{service}.core.windows.net" if account else None)

        return cls(queue_service_uri=uri("queue"), blob_service_uri=uri("blob"), table_service_uri=uri("table"),
                   client_id=env.get(f"{name}__clientId", "").strip() or None)


@dataclass(frozen=True)
class Settings:
    """Validated app settings, built only by load_settings: every default lives in SETTINGS above."""

    storage: StorageConnection
    environment: str
    graph_base_url: str
    graph_timeout_seconds: float
    entra_authority: str
    tenant_id: str
    client_id: str
    tenancy: str
    allowed_tenants: tuple[str, ...]
    app_credential: str
    client_secret: str
    client_certificate: str | None
    managed_identity_client_id: str | None
    credential_mode: str
    dev_users_file: Path | None
    tls_ca_bundle: Path | None
    throttle_inline_max_seconds: float
    throttle_max_requeues: int
    token_vault_container: str
    message_overflow_container: str
    auth_redirect_uri: str | None
    auth_connect_lookup_scope: bool
    api_audience: str
    api_required_scope: str
    keepalive_idle_hours: float
    keepalive_schedule: str
    queue_metrics_schedule: str
    parked_archive_container: str
    parked_archive_schedule: str
    parked_archive_margin_hours: float
    webhook_url: str | None
    webhook_secrets: tuple[str, ...]
    webhook_allowed_hosts: tuple[str, ...]
    webhook_connect_timeout_seconds: float
    webhook_read_timeout_seconds: float
    idempotency_table: str
    idempotency_window_hours: float
    webhook_max_attempts: int
    webhook_retry_base_seconds: float
    idempotency_stale_claim_seconds: float
    webhook_stale_claim_seconds: float
    calcom_webhook_secret: str | None
    calendly_webhook_signing_key: str | None
    intake_webhook_secrets: tuple[str, ...]
    intake_organizer_map: Mapping[str, str]
    intake_organizer_domains: tuple[str, ...]
    meeting_management: bool
    meeting_kind: MeetingKind
    appointments_table: str
    client_sms: bool
    client_sms_reminder: str | None
    attendance_reports: bool = False
    attendance_grace_minutes: float = 15.0
    attendance_wait_hours: float = 24.0
    # Calendar sync (MEETING_KIND=calendar): where Graph posts notifications, the timer and its intervals.
    graph_notification_base_url: str | None = None
    calendar_sync_schedule: str = "0 */30 * * * *"
    graph_subscription_minutes: int = 4320
    calendar_resync_hours: float = 6.0

    @property
    def is_development(self) -> bool:
        """True when running against the local stack."""
        return self.environment == "development"

    @property
    def authority_url(self) -> str:
        """The authority URL of the app's own tenant (ENTRA_TENANT_ID)."""
        return self.authority_for(self.tenant_id)

    @property
    def is_multi_tenant(self) -> bool:
        """Organizers of several tenants (ENTRA_TENANCY=multi)."""
        return self.tenancy == "multi"

    @property
    def sign_in_tenant(self) -> str:
        """Where organizers sign in: `organizations` in multi-tenant mode, else the app's own tenant."""
        return ORGANIZATIONS if self.is_multi_tenant else self.tenant_id

    def authority_for(self, tenant: str) -> str:
        """The authority URL of a tenant (or of `organizations`)."""
        return f"{self.entra_authority.rstrip('/')}/{tenant}"

    def tenant_allowed(self, tenant_id: str | None) -> bool:
        """Whether organizers and bearer callers of this tenant are accepted."""
        return bool(tenant_id) and str(tenant_id).lower() in self.allowed_tenants


def _public_url(read: values.Reader, name: str, value: str, environment: str) -> str | None:
    """An https URL, or plain http to loopback in development; otherwise a problem naming the setting."""
    if is_allowed_url(value, development=environment == "development"):
        return value
    read.problems.append(f"{name}={value!r} is invalid: must be an https URL "
                         "(plain http only to a loopback address with APP_ENVIRONMENT=development)")
    return None


def _webhook_url(read: values.Reader, environment: str) -> str | None:
    value = read.raw("WEBHOOK_URL")
    return _public_url(read, "WEBHOOK_URL", value, environment) if value else None


def _template(read: values.Reader, name: str, env: Mapping[str, str]) -> str | None:
    """A setting whose default names other settings in braces; None when one of them is unset."""
    value = read.raw(name)
    try:
        return value.format_map({key: env[key] for key in ("WEBSITE_HOSTNAME", "ENTRA_CLIENT_ID") if env.get(key)})
    except (KeyError, ValueError, IndexError):
        return None


def _redirect_uri(read: values.Reader, env: Mapping[str, str], environment: str, mode: str) -> str | None:
    value = _template(read, "AUTH_REDIRECT_URI", env)
    if value is None:
        if mode == "vault":
            read.problems.append("AUTH_REDIRECT_URI is missing: CREDENTIAL_MODE=vault needs the connect page's "
                                 "redirect URI (https://<host>/api/auth/callback); WEBSITE_HOSTNAME is not set "
                                 "either, so it cannot be derived")
        return None
    return _public_url(read, "AUTH_REDIRECT_URI", value, environment)


def _tenancy(read: values.Reader, tenant_id: str | None) -> tuple[str, tuple[str, ...]]:
    """ENTRA_TENANCY and the allow-list it implies; an empty list in multi-tenant mode is refused, not 'everyone'."""
    tenancy = read.raw("ENTRA_TENANCY").lower()
    if tenancy not in TENANCIES:
        read.problems.append(f"ENTRA_TENANCY={tenancy!r} is invalid: use single or multi")
    listed: tuple[str, ...] = read.parse("ENTRA_ALLOWED_TENANTS", values.tenant_list,
                                         "must be comma-separated tenant ids (GUIDs)") or ()
    if tenancy == "multi":
        if not listed and not read.raw("ENTRA_ALLOWED_TENANTS"):
            read.problems.append("ENTRA_ALLOWED_TENANTS is empty: with ENTRA_TENANCY=multi it must name every "
                                 "tenant whose organizers may connect (an empty list is not 'every tenant')")
        return tenancy, listed
    home = (tenant_id,) if tenant_id else ()
    if listed and listed != home:
        read.problems.append("ENTRA_ALLOWED_TENANTS is invalid: with ENTRA_TENANCY=single only ENTRA_TENANT_ID's "
                             "organizers can sign in; set ENTRA_TENANCY=multi to allow other tenants")
    return tenancy, home


def _app_credential(read: values.Reader) -> tuple[str, str, str | None, str | None]:
    """ENTRA_APP_CREDENTIAL and the one setting it needs: (kind, secret, certificate, managed identity client id)."""
    kind = read.raw("ENTRA_APP_CREDENTIAL").lower()
    if kind not in APP_CREDENTIALS:
        read.problems.append(f"ENTRA_APP_CREDENTIAL={kind!r} is invalid: use one of " + ", ".join(APP_CREDENTIALS))
    secret = read.raw("ENTRA_CLIENT_SECRET")
    certificate = read.parse("ENTRA_CLIENT_CERTIFICATE", values.certificate,
                             "must be PEM (private key and certificate) or base64 PKCS#12")
    identity = read.parse("ENTRA_MANAGED_IDENTITY_CLIENT_ID", values.guid, "must be a client id (GUID)")
    if kind == "client_secret" and not secret:
        read.missing("ENTRA_CLIENT_SECRET", "ENTRA_APP_CREDENTIAL=client_secret proves the app to Entra with it (or "
                     "choose certificate, or federated for no secret at all)")
    if kind == "certificate" and not read.raw("ENTRA_CLIENT_CERTIFICATE"):
        read.missing("ENTRA_CLIENT_CERTIFICATE", "ENTRA_APP_CREDENTIAL=certificate proves the app to Entra with it "
                     "(PEM with the private key, or a Key Vault certificate reference)")
    return kind, secret, certificate, identity


def _notification_base(read: values.Reader, env: Mapping[str, str], environment: str) -> str | None:
    """Where Graph posts notifications; needed (and checked) only with MEETING_KIND=calendar."""
    if read.raw("MEETING_KIND").strip().lower() != MeetingKind.CALENDAR:
        return None
    value = _template(read, "GRAPH_NOTIFICATION_BASE_URL", env)
    if value is None:
        # Calendar meetings work without it; the organizers' subscriptions then report notification_url_missing.
        return None
    url = _public_url(read, "GRAPH_NOTIFICATION_BASE_URL", value, environment)
    return url.rstrip("/") if url else None


def _meeting_kind(read: values.Reader) -> MeetingKind:
    value = read.raw("MEETING_KIND").strip().lower() or MeetingKind.STANDALONE
    if value not in MeetingKind:
        read.problems.append(f"MEETING_KIND={value!r} is invalid: use standalone or calendar")
        return MeetingKind.STANDALONE
    return MeetingKind(value)


def _sms_reminder(read: values.Reader) -> str | None:
    value = read.raw("CLIENT_SMS_REMINDER").strip().lower()
    if value in ("", "none"):
        return None
    if value != "mins15":
        read.problems.append(f"CLIENT_SMS_REMINDER={value!r} is invalid: use none or mins15 (Graph's only lead time)")
        return None
    return value


def _check_stale_claims(read: values.Reader, settings: Settings) -> None:
    """A claim must outlive any live invocation, or a second worker would redo work still in progress."""
    stale, graph = settings.idempotency_stale_claim_seconds, settings.graph_timeout_seconds
    # The longest invocation: a cancel of the app's meeting whose create died (text, createOrGet, DELETE) or a
    # create that must move the meeting it found (createOrGet, PATCH, join URL), after waiting for a lease.
    longest = 4 * graph + settings.throttle_inline_max_seconds + LEASE_PATIENCE_SECONDS if graph else 0.0
    if stale and graph and stale <= longest:
        read.problems.append(f"IDEMPOTENCY_STALE_CLAIM_SECONDS={stale:g} is invalid: must exceed the longest "
                             f"invocation (4 x GRAPH_TIMEOUT_SECONDS + THROTTLE_INLINE_MAX_SECONDS + "
                             f"{LEASE_PATIENCE_SECONDS:g} s waiting for an appointment's lease = {longest:g} s)")
    hook = settings.webhook_stale_claim_seconds
    timeouts = settings.webhook_connect_timeout_seconds + settings.webhook_read_timeout_seconds
    if hook and settings.webhook_connect_timeout_seconds and settings.webhook_read_timeout_seconds \
            and hook <= timeouts:
        read.problems.append(f"WEBHOOK_STALE_CLAIM_SECONDS={hook:g} is invalid: must exceed "
                             f"WEBHOOK_CONNECT_TIMEOUT_SECONDS + WEBHOOK_READ_TIMEOUT_SECONDS ({timeouts:g} s)")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raise SettingsError naming every missing or bad one."""
    env_map = os.environ if env is None else env
    read = values.Reader(env_map)
    read.raw("AzureWebJobsStorage")
    environment = read.raw("APP_ENVIRONMENT").lower()
    if environment not in ("production", "development"):
        read.problems.append(f"APP_ENVIRONMENT={environment!r} is invalid: use production or development")
    mode = read.raw("CREDENTIAL_MODE").lower()
    if mode in _APP_ONLY_MODES:
        read.problems.append(
            f"CREDENTIAL_MODE={mode!r} is an app-only credential, but getVirtualAppointmentJoinWebUrl "
            "supports delegated permissions only (least privileged: VirtualAppointment.Read); "
            "Graph answers 403 to app-only tokens. Use a delegated mode: " + ", ".join(_DELEGATED_MODES))
    elif mode not in _DELEGATED_MODES:
        read.problems.append(f"CREDENTIAL_MODE={mode!r} is invalid: use one of " + ", ".join(_DELEGATED_MODES))
    dev_users = read.parse("DEV_USERS_FILE", values.existing_file, "must be an existing JSON file")
    tenant_id = read.parse("ENTRA_TENANT_ID", values.guid, "must be the Directory (tenant) id, a GUID")
    tenancy, allowed_tenants = _tenancy(read, tenant_id)
    app_credential, client_secret, client_certificate, identity_client_id = _app_credential(read)
    if mode == "dev_password":
        if environment != "development":
            read.problems.append("CREDENTIAL_MODE=dev_password needs APP_ENVIRONMENT=development: "
                                 "it signs in local test users and is never for production")
        if dev_users is None and not read.raw("DEV_USERS_FILE"):
            read.problems.append("DEV_USERS_FILE is missing: CREDENTIAL_MODE=dev_password reads test users from it")
    settings = Settings(
        storage=StorageConnection.from_env(env_map),
        environment=environment,
        graph_base_url=read.parse("GRAPH_BASE_URL", values.https_url, "must be an https URL") or "",
        graph_timeout_seconds=read.parse("GRAPH_TIMEOUT_SECONDS", values.positive_float, "must be a positive number"),
        entra_authority=read.parse("ENTRA_AUTHORITY", values.https_url, "must be an https URL") or "",
        tenant_id=tenant_id or "",
        client_id=read.raw("ENTRA_CLIENT_ID"),
        tenancy=tenancy,
        allowed_tenants=allowed_tenants,
        app_credential=app_credential,
        client_secret=client_secret,
        client_certificate=client_certificate,
        managed_identity_client_id=identity_client_id,
        credential_mode=mode,
        dev_users_file=dev_users,
        tls_ca_bundle=read.parse("TLS_CA_BUNDLE", values.existing_file, "must be an existing PEM file"),
        throttle_inline_max_seconds=read.parse(
            "THROTTLE_INLINE_MAX_SECONDS", float, "must be a number of seconds") or 0.0,
        throttle_max_requeues=read.parse("THROTTLE_MAX_REQUEUES", values.non_negative_int,
                                         "must be a whole number >= 0"),
        token_vault_container=read.parse("TOKEN_VAULT_CONTAINER", values.container_name,
                                         "must be a blob container name (3-63 lowercase letters, digits, hyphens)")
        or "",
        message_overflow_container=read.parse("MESSAGE_OVERFLOW_CONTAINER", values.container_name,
                                              "must be a blob container name (3-63 lowercase letters, digits, "
                                              "hyphens)") or "",
        auth_redirect_uri=_redirect_uri(read, env_map, environment, mode),
        auth_connect_lookup_scope=bool(read.parse("AUTH_CONNECT_LOOKUP_SCOPE", values.boolean,
                                                  "must be true or false")),
        api_audience=_template(read, "API_AUDIENCE", env_map) or "",
        api_required_scope=read.raw("API_REQUIRED_SCOPE"),
        keepalive_idle_hours=read.parse("KEEPALIVE_IDLE_HOURS", values.positive_float, "must be a positive number"),
        keepalive_schedule=read.parse("KEEPALIVE_SCHEDULE", values.ncrontab,
                                      "must be an NCRONTAB expression with six fields, e.g. '0 0 */6 * * *'") or "",
        queue_metrics_schedule=read.parse("QUEUE_METRICS_SCHEDULE", values.ncrontab,
                                          "must be an NCRONTAB expression with six fields, e.g. '0 */5 * * * *'")
        or "",
        parked_archive_container=read.parse("PARKED_ARCHIVE_CONTAINER", values.container_name,
                                            "must be a blob container name (3-63 lowercase letters, digits, "
                                            "hyphens)") or "",
        parked_archive_schedule=read.parse("PARKED_ARCHIVE_SCHEDULE", values.ncrontab,
                                           "must be an NCRONTAB expression with six fields, e.g. '0 20 * * * *'")
        or "",
        parked_archive_margin_hours=read.parse("PARKED_ARCHIVE_MARGIN_HOURS", values.positive_float,
                                               "must be a positive number"),
        webhook_url=_webhook_url(read, environment),
        webhook_secrets=read.parse("WEBHOOK_SECRET", values.webhook_secrets,
                                   "must be one or two comma-separated whsec_<base64> secrets of 24-64 bytes") or (),
        webhook_allowed_hosts=read.parse("WEBHOOK_ALLOWED_HOSTS", values.host_patterns,
                                         "must be comma-separated host names or *.suffix wildcards") or (),
        webhook_connect_timeout_seconds=read.parse(
            "WEBHOOK_CONNECT_TIMEOUT_SECONDS", values.positive_float, "must be a positive number"),
        webhook_read_timeout_seconds=read.parse(
            "WEBHOOK_READ_TIMEOUT_SECONDS", values.positive_float, "must be a positive number"),
        idempotency_table=read.parse("IDEMPOTENCY_TABLE", values.table_name,
                                     "must be 3-63 letters and digits, starting with a letter") or "",
        idempotency_window_hours=read.parse("IDEMPOTENCY_WINDOW_HOURS", values.positive_float,
                                            "must be a positive number"),
        webhook_max_attempts=read.parse("WEBHOOK_MAX_ATTEMPTS", values.non_negative_int, "must be a whole number >= 0"),
        webhook_retry_base_seconds=read.parse("WEBHOOK_RETRY_BASE_SECONDS", values.positive_float,
                                              "must be a positive number"),
        idempotency_stale_claim_seconds=read.parse("IDEMPOTENCY_STALE_CLAIM_SECONDS", values.positive_float,
                                                   "must be a positive number"),
        webhook_stale_claim_seconds=read.parse("WEBHOOK_STALE_CLAIM_SECONDS", values.positive_float,
                                               "must be a positive number"),
        calcom_webhook_secret=read.raw("CALCOM_WEBHOOK_SECRET") or None,
        calendly_webhook_signing_key=read.raw("CALENDLY_WEBHOOK_SIGNING_KEY") or None,
        intake_webhook_secrets=read.parse("INTAKE_WEBHOOK_SECRET", values.webhook_secrets,
                                          "must be one or two comma-separated whsec_<base64> secrets of 24-64 "
                                          "bytes") or (),
        intake_organizer_map=read.parse("INTAKE_ORGANIZER_MAP", values.organizer_map,
                                        "must be a JSON object whose values are Entra object ids or UPNs") or {},
        intake_organizer_domains=read.parse("INTAKE_ORGANIZER_DOMAINS", values.domains,
                                            "must be comma-separated e-mail domains (contoso.com)") or (),
        meeting_management=bool(read.parse("MEETING_MANAGEMENT", values.boolean, "must be true or false")),
        meeting_kind=_meeting_kind(read),
        appointments_table=read.parse("APPOINTMENTS_TABLE", values.table_name,
                                      "must be 3-63 letters and digits, starting with a letter") or "",
        client_sms=bool(read.parse("CLIENT_SMS", values.boolean, "must be true or false")),
        client_sms_reminder=_sms_reminder(read),
        attendance_reports=bool(read.parse("ATTENDANCE_REPORTS", values.boolean, "must be true or false")),
        attendance_grace_minutes=read.parse("ATTENDANCE_GRACE_MINUTES", values.non_negative_float,
                                            "must be a number of minutes >= 0"),
        attendance_wait_hours=read.parse("ATTENDANCE_WAIT_HOURS", values.positive_float, "must be a positive number"),
        graph_notification_base_url=_notification_base(read, env_map, environment),
        calendar_sync_schedule=read.parse("CALENDAR_SYNC_SCHEDULE", values.ncrontab,
                                          "must be an NCRONTAB expression with six fields, e.g. '0 */30 * * * *'")
        or "",
        graph_subscription_minutes=read.parse("GRAPH_SUBSCRIPTION_MINUTES", values.subscription_minutes,
                                              "must be a whole number of minutes from 45 to 10080"),
        calendar_resync_hours=read.parse("CALENDAR_RESYNC_HOURS", values.positive_float, "must be a positive number"),
    )
    _check_stale_claims(read, settings)
    if read.problems:
        raise SettingsError(read.problems)
    return settings


__all__ = ["SETTINGS", "SettingSpec", "Settings", "StorageConnection", "load_settings", "setting_default"]
