"""The token vault: one MSAL token cache per connected organizer, written with ETag concurrency.

Layout of the private container (TOKEN_VAULT_CONTAINER):
  organizers/<oid>.json     the organizer's entry: MSAL serialized cache + connection health
  aliases/<sha256(upn)>     the oid a (lower-cased) UPN belongs to, so either finds the entry
  flows/<sha256(state)>     a connect page's one-time sign-in flow, taken (read and deleted) by the callback

The blob client is the synchronous one: every caller is already on a worker thread (the acquirer runs
under asyncio.to_thread because MSAL is blocking), so an async client would only add a second event loop.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.common.clock import utc_now
from shared.common.ids import is_guid
from shared.exceptions import SettingsError, VaultConflictError, VaultUnavailableError
from shared.identity.msal import ClientType
from shared.settings import StorageConnection
from shared.storage.credentials import storage_credential

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

_ENTRY_VERSION = 1
# A flow is useless after this long anyway (Entra's authorization codes live ~10 minutes).
FLOW_MAX_SECONDS = 600


class ConnectionStatus(StrEnum):
    """Where an organizer's connection stands; anything but CONNECTED needs a person to reconnect."""

    CONNECTED = "connected"
    NEEDS_RECONNECT = "needs_reconnect"  # the identity platform refused the refresh token
    REVOKED = "revoked"  # the grant was revoked (password reset, sessions revoked, account disabled)


@dataclass
class VaultEntry:
    """One organizer's connection: the MSAL token cache and its health."""

    oid: str
    upn: str
    display_name: str
    cache: str
    client_type: str = ClientType.CONFIDENTIAL
    status: str = ConnectionStatus.CONNECTED
    connected_at: str = field(default_factory=utc_now)
    last_refreshed_at: str | None = None
    last_success_at: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    # The blob's ETag when read; None for an entry not yet stored. Never serialized.
    etag: str | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        """The stored form (without the ETag)."""
        doc = asdict(self)
        del doc["etag"]
        return json.dumps({"version": _ENTRY_VERSION, **doc}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, etag: str | None) -> VaultEntry:
        """Parse a stored entry; unknown fields from newer versions are ignored."""
        doc = json.loads(text)
        known = {name for name in cls.__dataclass_fields__ if name != "etag"}
        return cls(**{k: v for k, v in doc.items() if k in known}, etag=etag)

    @classmethod
    def connected(cls, claims: dict[str, Any], cache: str, client_type: str) -> VaultEntry:
        """A fresh connection from the signed-in user's id token claims and MSAL's cache."""
        now = utc_now()
        upn = str(claims.get("preferred_username") or claims.get("upn") or claims["oid"])
        return cls(oid=str(claims["oid"]).lower(), upn=upn, display_name=str(claims.get("name") or upn), cache=cache,
                   client_type=client_type, connected_at=now, last_refreshed_at=now, last_success_at=now)

    def health(self) -> dict[str, Any]:
        """Everything but the token cache: what `list` and the logs may show."""
        doc = asdict(self)
        for secret_or_internal in ("cache", "etag"):
            del doc[secret_or_internal]
        return doc


def organizer_key(organizer: str) -> tuple[str, str]:
    """('oid', id) for an object id, ('upn', lower-cased UPN) otherwise."""
    value = organizer.strip().lower()
    return ("oid", value) if is_guid(value) else ("upn", value)


def upn_hash(upn: str) -> str:
    """Blob name part for a UPN: hashed, so storage listings and logs carry no addresses."""
    return hashlib.sha256(upn.strip().lower().encode()).hexdigest()


def flow_key(state: str) -> str:
    """Where a sign-in flow is kept, and what the browser's cookie holds: a hash of its state."""
    return hashlib.sha256(state.encode()).hexdigest()


class TokenVault(ABC):
    """Organizer entries (ETag-guarded) and one-time sign-in flows."""

    @abstractmethod
    def get(self, organizer: str) -> VaultEntry | None:
        """The organizer's entry by object id or UPN, with its ETag; None if not connected."""

    @abstractmethod
    def save(self, entry: VaultEntry) -> VaultEntry:
        """Create (entry.etag None) or update (If-Match entry.etag); raise VaultConflictError otherwise."""

    @abstractmethod
    def delete(self, organizer: str) -> VaultEntry | None:
        """Remove the organizer's entry and alias; the removed entry, or None."""

    @abstractmethod
    def entries(self) -> Iterator[VaultEntry]:
        """Every organizer's entry."""

    @abstractmethod
    def put_flow(self, key: str, flow: dict[str, Any], ttl_seconds: float = FLOW_MAX_SECONDS) -> None:
        """Keep a sign-in flow until the callback takes it, at most ttl_seconds."""

    @abstractmethod
    def take_flow(self, key: str) -> dict[str, Any] | None:
        """Read and delete a flow in one step: only one caller ever gets it; None if absent or expired."""

    @abstractmethod
    def purge_flows(self) -> int:
        """Delete abandoned expired flows; how many."""

    def store_connection(self, entry: VaultEntry) -> VaultEntry:
        """Store a fresh connection, replacing any earlier one of the same organizer."""
        for _ in range(5):
            current = self.get(entry.oid)
            try:
                return self.save(replace(entry, etag=current.etag if current else None))
            except VaultConflictError:
                continue  # someone refreshed the old entry meanwhile; ours replaces it anyway
        raise VaultUnavailableError("the organizer's vault entry kept changing while it was being replaced")


def wrap_flow(flow: dict[str, Any], ttl_seconds: float) -> str:
    """A sign-in flow as stored, with its expiry."""
    return json.dumps({"expires_at": time.time() + min(ttl_seconds, FLOW_MAX_SECONDS), "flow": flow})


def unwrap_flow(text: str | bytes) -> dict[str, Any] | None:
    """A stored sign-in flow, or None once it has expired."""
    doc = json.loads(text)
    if float(doc.get("expires_at", 0)) < time.time():
        return None
    flow: dict[str, Any] = doc["flow"]
    return flow


def matching_entry(entry: VaultEntry, organizer: str) -> VaultEntry | None:
    """The entry if it still names the organizer it was looked up by, else None."""
    # An alias outlives a UPN that moved to another person; the entry must still name the organizer.
    kind, value = organizer_key(organizer)
    if kind == "upn" and entry.upn.lower() != value:
        return None
    return entry


def _container_client(conn: StorageConnection, container: str) -> ContainerClient:
    from azure.storage.blob import ContainerClient

    if conn.connection_string:
        return ContainerClient.from_connection_string(conn.connection_string, container)
    if not conn.blob_service_uri:
        raise SettingsError(["AzureWebJobsStorage has neither a connection string nor a blob service URI "
                             "(AzureWebJobsStorage__blobServiceUri or __accountName)"])
    # The same identity as the host's connection, in its synchronous flavour (the vault's callers are threads).
    return ContainerClient(conn.blob_service_uri, container, credential=storage_credential(conn, asynchronous=False))


class BlobTokenVault(TokenVault):
    """The vault in a private blob container of the AzureWebJobsStorage account."""

    def __init__(self, conn: StorageConnection, container: str) -> None:
        self._conn = conn
        self._container_name = container
        self._client: ContainerClient | None = None
        self._lock = threading.Lock()

    @property
    def container(self) -> ContainerClient:
        """The container client, made (and the container created, private) on first use."""
        with self._lock:
            if self._client is None:
                from azure.core.exceptions import HttpResponseError, ResourceExistsError

                client = _container_client(self._conn, self._container_name)
                try:
                    # No public_access argument: the container is private, as refresh tokens demand.
                    _guarded(client.create_container)
                except ResourceExistsError:
                    pass
                except VaultUnavailableError as exc:
                    # An operator may hold a role on this container only, not the right to create one;
                    # Bicep creates it in Azure, so carry on and let the first real call speak.
                    cause = exc.__cause__
                    if not (isinstance(cause, HttpResponseError) and cause.status_code == 403):
                        raise
                self._client = client
            return self._client

    def _download(self, name: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = _guarded(self.container.download_blob, name)
        except ResourceNotFoundError:
            return None
        return downloader.readall(), str(downloader.properties.etag)

    def get(self, organizer: str) -> VaultEntry | None:
        """The organizer's entry by object id or UPN."""
        kind, value = organizer_key(organizer)
        oid: str | None = value
        if kind == "upn":
            alias = self._download(f"aliases/{upn_hash(value)}")
            oid = alias[0].decode().strip() if alias else None
        found = self._download(f"organizers/{oid}.json") if oid else None
        if found is None:
            return None
        return matching_entry(VaultEntry.from_json(found[0], found[1]), organizer)

    def save(self, entry: VaultEntry) -> VaultEntry:
        """Create (If-None-Match: *) or update (If-Match) the entry, then point its alias at it."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        blob = self.container.get_blob_client(f"organizers/{entry.oid.lower()}.json")
        settings = ContentSettings(content_type="application/json")
        try:
            if entry.etag is None:
                result = _guarded(blob.upload_blob, entry.to_json(), overwrite=False, content_settings=settings)
            else:
                result = _guarded(blob.upload_blob, entry.to_json(), overwrite=True, content_settings=settings,
                                  etag=entry.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise VaultConflictError(f"vault entry changed since it was read ({type(exc).__name__})") from None
        # Last writer wins for the alias: it only ever maps a UPN to the oid that most recently connected.
        _guarded(self.container.upload_blob, f"aliases/{upn_hash(entry.upn)}", entry.oid.lower(), overwrite=True)
        return replace(entry, etag=str(result["etag"]))

    def delete(self, organizer: str) -> VaultEntry | None:
        """Remove the entry and its alias."""
        from azure.core.exceptions import ResourceNotFoundError

        entry = self.get(organizer)
        if entry is None:
            return None
        for name in (f"organizers/{entry.oid.lower()}.json", f"aliases/{upn_hash(entry.upn)}"):
            try:
                _guarded(self.container.delete_blob, name)
            except ResourceNotFoundError:
                pass
        return entry

    def entries(self) -> Iterator[VaultEntry]:
        """Every entry (read one by one, each with its ETag)."""
        names = [b.name for b in _guarded(lambda: list(self.container.list_blobs(name_starts_with="organizers/")))]
        for name in names:
            found = self._download(name)
            if found is not None:
                yield VaultEntry.from_json(found[0], found[1])

    def put_flow(self, key: str, flow: dict[str, Any], ttl_seconds: float = FLOW_MAX_SECONDS) -> None:
        """Keep a flow (create-only: a state is never reused)."""
        from azure.core.exceptions import ResourceExistsError

        text = wrap_flow(flow, ttl_seconds)
        # The expiry rides along as metadata too, so purge_flows can judge a flow from a listing alone.
        metadata = {"expires_at": str(int(json.loads(text)["expires_at"]))}
        try:
            _guarded(self.container.upload_blob, f"flows/{key}", text, overwrite=False, metadata=metadata)
        except ResourceExistsError:
            raise VaultConflictError("a sign-in flow with this state already exists") from None

    def take_flow(self, key: str) -> dict[str, Any] | None:
        """Read, then delete under the read's ETag: of two concurrent callbacks only one wins."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        found = self._download(f"flows/{key}")
        if found is None:
            return None
        try:
            _guarded(self.container.delete_blob, f"flows/{key}", etag=found[1],
                     match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        return unwrap_flow(found[0])

    def purge_flows(self) -> int:
        """Delete abandoned flows whose expiry has passed (older flows without metadata: after the longest lifetime)."""
        from azure.core.exceptions import ResourceNotFoundError

        now = time.time()
        blobs = _guarded(lambda: list(self.container.list_blobs(name_starts_with="flows/", include=["metadata"])))
        purged = 0
        for blob in blobs:
            expires_at = (blob.metadata or {}).get("expires_at", "")
            if expires_at.isdigit():
                expired = int(expires_at) < now
            else:
                expired = blob.last_modified is not None and blob.last_modified.timestamp() < now - FLOW_MAX_SECONDS
            if expired:
                try:
                    _guarded(self.container.delete_blob, blob.name)
                    purged += 1
                except ResourceNotFoundError:
                    pass
        return purged


def _guarded(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a storage call; outages become VaultUnavailableError, answers the caller handles pass through."""
    from azure.core.exceptions import (
        HttpResponseError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    try:
        return call(*args, **kwargs)
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        raise
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise VaultUnavailableError(f"token vault unreachable ({type(exc).__name__})") from exc
    except HttpResponseError as exc:
        if exc.status_code == 412:
            raise ResourceModifiedError(message=str(exc), response=exc.response) from exc
        raise VaultUnavailableError(f"token vault answered {exc.status_code}") from exc
