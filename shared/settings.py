"""The app's settings: one typed object, built from the environment and validated at start-up."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.exceptions import SettingsError


@dataclass(frozen=True)
class SettingSpec:
    """One environment setting the app reads: its name, whether it must be set, and what it means."""

    name: str
    description: str
    required: bool = False
    default: str | None = None
    secret: bool = False
    dev_only: bool = False


# The single registry of every setting the code reads. README, local.settings.sample.json and the
# Bicep app settings are checked against it, so adding a setting means adding it here.
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
    SettingSpec("ENTRA_TENANT_ID", "Directory (tenant) id of the app registration.", required=True),
    SettingSpec("ENTRA_CLIENT_ID", "Application (client) id of the app registration.", required=True),
    SettingSpec("ENTRA_CLIENT_SECRET", "Client secret of the app registration (a Key Vault reference in "
                "Azure).", required=True, secret=True),
    SettingSpec("CREDENTIAL_MODE", "How the app obtains a delegated token for an organizer: `dev_password` "
                "(local stack test users only). App-only modes are refused: this Graph API is delegated-only.",
                default="dev_password"),
    SettingSpec("DEV_USERS_FILE", "`dev_password` mode: JSON file with the local test users.", dev_only=True),
    SettingSpec("TLS_CA_BUNDLE", "Extra CA certificate (PEM) to trust, for the local emulators' HTTPS.",
                dev_only=True),
    SettingSpec("THROTTLE_INLINE_MAX_SECONDS", "A Graph 429 whose Retry-After is at most this many seconds "
                "is retried inside the invocation; a longer one re-enqueues the event.", default="2"),
    SettingSpec("THROTTLE_MAX_REQUEUES", "How often one event may be re-enqueued for throttling before "
                "it is treated as a transient failure (and so ends in the poison queue).", default="5"),
)

_SPECS = {spec.name: spec for spec in SETTINGS}
_DELEGATED_MODES = ("dev_password",)
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
    """Validated app settings."""

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
        spec = _SPECS[name]
        value = self._env.get(name, "").strip()
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
            self.problems.append(f"{name}={value!r} is invalid: {rule}")
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


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ValueError(value)
    return path


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
    )
    if read.problems:
        raise SettingsError(read.problems)
    return settings
