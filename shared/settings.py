"""The app's settings: one typed object, built from the environment and validated at start-up.

What each setting means and its default: shared/settings_registry.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.common.ids import is_guid, is_upn
from shared.common.standard_webhooks import decode_secret
from shared.common.urls import is_allowed_url
from shared.exceptions import SettingsError, WebhookSignatureError
from shared.settings_registry import SETTINGS, SPECS_BY_NAME, SettingSpec, setting_default

_DELEGATED_MODES = ("vault", "dev_password")
_UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("
_APP_ONLY_MODES = ("managed_identity", "client_credentials", "client_secret", "app_only", "certificate")


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
    client_secret: str
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
    calcom_webhook_secret: str | None = None
    calendly_webhook_signing_key: str | None = None
    intake_webhook_secrets: tuple[str, ...] = ()
    intake_organizer_map: Mapping[str, str] = field(default_factory=dict)
    intake_organizer_domains: tuple[str, ...] = ()

    @property
    def is_development(self) -> bool:
        """True when running against the local stack."""
        return self.environment == "development"

    @property
    def authority_url(self) -> str:
        """The tenant-specific authority URL MSAL and azure-identity use."""
        return f"{self.entra_authority.rstrip('/')}/{self.tenant_id}"


class _Reader:
    """Collects every problem before failing, so one start-up shows all bad settings at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str:
        spec = SPECS_BY_NAME[name]
        value = self._env.get(name, "").strip()
        if value.startswith(_UNRESOLVED_REFERENCE):
            # App Service leaves a Key Vault reference it cannot resolve as literal text: never a secret's value.
            # An optional secret whose Key Vault entry does not exist (an intake not turned on) is unset.
            if spec.required:
                self.problems.append(f"{name} is a Key Vault reference App Service could not resolve (check the "
                                     "secret exists and the app identity holds Key Vault Secrets User)")
            value = ""
        if not value and spec.name == "AzureWebJobsStorage":
            # Identity-based connections have no single value; the presence of any service URI counts.
            if any(k.startswith("AzureWebJobsStorage__") for k in self._env):
                return "identity"
        if not value:
            if spec.required:
                self.problems.append(f"{name} is missing: {spec.description}")
            return spec.default or ""
        return value

    def parse(self, name: str, convert: Callable[[str], Any], rule: str) -> Any:
        value = self.raw(name)
        if not value:
            return None
        try:
            return convert(value)
        except (ValueError, TypeError):
            # A secret's value must not reach start-up errors and logs, even when it is malformed.
            shown = "<redacted>" if SPECS_BY_NAME[name].secret else repr(value)
            self.problems.append(f"{name}={shown} is invalid: {rule}")
            return None


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _https_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(value)
    return value.rstrip("/")


def _public_url(read: _Reader, name: str, value: str, environment: str) -> str | None:
    """An https URL, or plain http to loopback in development; otherwise a problem naming the setting."""
    if is_allowed_url(value, development=environment == "development"):
        return value
    read.problems.append(f"{name}={value!r} is invalid: must be an https URL "
                         "(plain http only to a loopback address with APP_ENVIRONMENT=development)")
    return None


def _webhook_url(read: _Reader, environment: str) -> str | None:
    value = read.raw("WEBHOOK_URL")
    return _public_url(read, "WEBHOOK_URL", value, environment) if value else None


def _container_name(value: str) -> str:
    # Blob container rules: 3-63 lowercase letters, digits and single hyphens, starting and ending alphanumeric.
    if not (3 <= len(value) <= 63 and value.isascii() and value.replace("-", "").isalnum() and value == value.lower()
            and value[0] != "-" and value[-1] != "-" and "--" not in value):
        raise ValueError(value)
    return value


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(value)
    return lowered in ("true", "1", "yes")


def _ncrontab(value: str) -> str:
    # Six fields (seconds first) as the Functions host expects; the host itself checks the field values.
    if len(value.split()) != 6:
        raise ValueError(value)
    return value


def _template(read: _Reader, name: str, env: Mapping[str, str]) -> str | None:
    """A setting whose default names other settings in braces; None when one of them is unset."""
    value = read.raw(name)
    try:
        return value.format_map({key: env[key] for key in ("WEBSITE_HOSTNAME", "ENTRA_CLIENT_ID") if env.get(key)})
    except (KeyError, ValueError, IndexError):
        return None


def _redirect_uri(read: _Reader, env: Mapping[str, str], environment: str, mode: str) -> str | None:
    value = _template(read, "AUTH_REDIRECT_URI", env)
    if value is None:
        if mode == "vault":
            read.problems.append("AUTH_REDIRECT_URI is missing: CREDENTIAL_MODE=vault needs the connect page's "
                                 "redirect URI (https://<host>/api/auth/callback); WEBSITE_HOSTNAME is not set "
                                 "either, so it cannot be derived")
        return None
    return _public_url(read, "AUTH_REDIRECT_URI", value, environment)


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ValueError(value)
    return path


def _webhook_secrets(value: str) -> tuple[str, ...]:

    secrets = tuple(part.strip() for part in value.split(",") if part.strip())
    if not 1 <= len(secrets) <= 2:
        raise ValueError(value)
    try:
        for secret in secrets:
            decode_secret(secret)
    except WebhookSignatureError as exc:
        raise ValueError(str(exc)) from None
    return secrets


def _host_patterns(value: str) -> tuple[str, ...]:
    patterns = tuple(part.strip().lower().rstrip(".") for part in value.split(",") if part.strip())
    for pattern in patterns:
        name = pattern[2:] if pattern.startswith("*.") else pattern
        # A bare "*" or a wildcard in the middle would allow far more than anyone means to.
        if not name or "*" in name or "/" in name or ":" in name or " " in name:
            raise ValueError(pattern)
    return patterns


def _organizer_map(value: str) -> dict[str, str]:
    doc = json.loads(value)
    if not isinstance(doc, dict):
        raise ValueError(value)
    entries: dict[str, str] = {}
    for key, target in doc.items():
        if not isinstance(target, str) or not (is_guid(target.strip()) or is_upn(target.strip())):
            raise ValueError(key)
        entries[key.strip().lower()] = target.strip()
    return entries


def _domains(value: str) -> tuple[str, ...]:
    domains = tuple(part.strip().lower().lstrip("@") for part in value.split(",") if part.strip())
    for domain in domains:
        if "." not in domain or any(ch in domain for ch in " /\\@*:"):
            raise ValueError(domain)
    return domains


def _table_name(value: str) -> str:
    if not (3 <= len(value) <= 63 and value[0].isalpha() and value.isalnum() and value.isascii()):
        raise ValueError(value)
    return value


def _check_stale_claims(read: _Reader, settings: Settings) -> None:
    """A claim must outlive any live invocation, or a second worker would redo work still in progress."""
    stale, graph = settings.idempotency_stale_claim_seconds, settings.graph_timeout_seconds
    if stale and graph and stale <= 2 * graph + settings.throttle_inline_max_seconds:
        read.problems.append(f"IDEMPOTENCY_STALE_CLAIM_SECONDS={stale:g} is invalid: must exceed the longest "
                             f"invocation (2 x GRAPH_TIMEOUT_SECONDS + THROTTLE_INLINE_MAX_SECONDS = "
                             f"{2 * graph + settings.throttle_inline_max_seconds:g} s)")
    hook = settings.webhook_stale_claim_seconds
    timeouts = settings.webhook_connect_timeout_seconds + settings.webhook_read_timeout_seconds
    if hook and settings.webhook_connect_timeout_seconds and settings.webhook_read_timeout_seconds \
            and hook <= timeouts:
        read.problems.append(f"WEBHOOK_STALE_CLAIM_SECONDS={hook:g} is invalid: must exceed "
                             f"WEBHOOK_CONNECT_TIMEOUT_SECONDS + WEBHOOK_READ_TIMEOUT_SECONDS ({timeouts:g} s)")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raise SettingsError naming every missing or bad one."""
    env_map = os.environ if env is None else env
    read = _Reader(env_map)
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
    dev_users = read.parse("DEV_USERS_FILE", _existing_file, "must be an existing JSON file")
    if mode == "dev_password":
        if environment != "development":
            read.problems.append("CREDENTIAL_MODE=dev_password needs APP_ENVIRONMENT=development: "
                                 "it signs in local test users and is never for production")
        if dev_users is None and not read.raw("DEV_USERS_FILE"):
            read.problems.append("DEV_USERS_FILE is missing: CREDENTIAL_MODE=dev_password reads test users from it")
    settings = Settings(
        storage=StorageConnection.from_env(env_map),
        environment=environment,
        graph_base_url=read.parse("GRAPH_BASE_URL", _https_url, "must be an https URL") or "",
        graph_timeout_seconds=read.parse("GRAPH_TIMEOUT_SECONDS", _positive_float, "must be a positive number"),
        entra_authority=read.parse("ENTRA_AUTHORITY", _https_url, "must be an https URL") or "",
        tenant_id=read.raw("ENTRA_TENANT_ID"),
        client_id=read.raw("ENTRA_CLIENT_ID"),
        client_secret=read.raw("ENTRA_CLIENT_SECRET"),
        credential_mode=mode,
        dev_users_file=dev_users,
        tls_ca_bundle=read.parse("TLS_CA_BUNDLE", _existing_file, "must be an existing PEM file"),
        throttle_inline_max_seconds=read.parse(
            "THROTTLE_INLINE_MAX_SECONDS", float, "must be a number of seconds") or 0.0,
        throttle_max_requeues=read.parse("THROTTLE_MAX_REQUEUES", _non_negative_int, "must be a whole number >= 0"),
        token_vault_container=read.parse("TOKEN_VAULT_CONTAINER", _container_name,
                                         "must be a blob container name (3-63 lowercase letters, digits, hyphens)")
        or "",
        message_overflow_container=read.parse("MESSAGE_OVERFLOW_CONTAINER", _container_name,
                                              "must be a blob container name (3-63 lowercase letters, digits, "
                                              "hyphens)") or "",
        auth_redirect_uri=_redirect_uri(read, env_map, environment, mode),
        auth_connect_lookup_scope=bool(read.parse("AUTH_CONNECT_LOOKUP_SCOPE", _boolean, "must be true or false")),
        api_audience=_template(read, "API_AUDIENCE", env_map) or "",
        api_required_scope=read.raw("API_REQUIRED_SCOPE"),
        keepalive_idle_hours=read.parse("KEEPALIVE_IDLE_HOURS", _positive_float, "must be a positive number"),
        keepalive_schedule=read.parse("KEEPALIVE_SCHEDULE", _ncrontab,
                                      "must be an NCRONTAB expression with six fields, e.g. '0 0 */6 * * *'") or "",
        queue_metrics_schedule=read.parse("QUEUE_METRICS_SCHEDULE", _ncrontab,
                                          "must be an NCRONTAB expression with six fields, e.g. '0 */5 * * * *'")
        or "",
        webhook_url=_webhook_url(read, environment),
        webhook_secrets=read.parse("WEBHOOK_SECRET", _webhook_secrets,
                                   "must be one or two comma-separated whsec_<base64> secrets of 24-64 bytes") or (),
        webhook_allowed_hosts=read.parse("WEBHOOK_ALLOWED_HOSTS", _host_patterns,
                                         "must be comma-separated host names or *.suffix wildcards") or (),
        webhook_connect_timeout_seconds=read.parse(
            "WEBHOOK_CONNECT_TIMEOUT_SECONDS", _positive_float, "must be a positive number"),
        webhook_read_timeout_seconds=read.parse(
            "WEBHOOK_READ_TIMEOUT_SECONDS", _positive_float, "must be a positive number"),
        idempotency_table=read.parse("IDEMPOTENCY_TABLE", _table_name,
                                     "must be 3-63 letters and digits, starting with a letter") or "",
        idempotency_window_hours=read.parse("IDEMPOTENCY_WINDOW_HOURS", _positive_float, "must be a positive number"),
        webhook_max_attempts=read.parse("WEBHOOK_MAX_ATTEMPTS", _non_negative_int, "must be a whole number >= 0"),
        webhook_retry_base_seconds=read.parse("WEBHOOK_RETRY_BASE_SECONDS", _positive_float,
                                              "must be a positive number"),
        idempotency_stale_claim_seconds=read.parse("IDEMPOTENCY_STALE_CLAIM_SECONDS", _positive_float,
                                                   "must be a positive number"),
        webhook_stale_claim_seconds=read.parse("WEBHOOK_STALE_CLAIM_SECONDS", _positive_float,
                                               "must be a positive number"),
        calcom_webhook_secret=read.raw("CALCOM_WEBHOOK_SECRET") or None,
        calendly_webhook_signing_key=read.raw("CALENDLY_WEBHOOK_SIGNING_KEY") or None,
        intake_webhook_secrets=read.parse("INTAKE_WEBHOOK_SECRET", _webhook_secrets,
                                          "must be one or two comma-separated whsec_<base64> secrets of 24-64 "
                                          "bytes") or (),
        intake_organizer_map=read.parse("INTAKE_ORGANIZER_MAP", _organizer_map,
                                        "must be a JSON object whose values are Entra object ids or UPNs") or {},
        intake_organizer_domains=read.parse("INTAKE_ORGANIZER_DOMAINS", _domains,
                                            "must be comma-separated e-mail domains (contoso.com)") or (),
    )
    _check_stale_claims(read, settings)
    if read.problems:
        raise SettingsError(read.problems)
    return settings


__all__ = ["SETTINGS", "SettingSpec", "Settings", "StorageConnection", "load_settings", "setting_default"]
