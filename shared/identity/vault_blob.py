"""The token vault in a private blob container of the AzureWebJobsStorage account (the lookup rule: vault.py).

The blob client is the synchronous one: every caller is already on a worker thread (the acquirer runs
under asyncio.to_thread because MSAL is blocking), so an async client would only add a second event loop.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from shared.exceptions import SettingsError, VaultConflictError, VaultUnavailableError
from shared.identity.vault import FLOW_MAX_SECONDS, TokenVault, wrap_flow
from shared.settings import StorageConnection
from shared.storage.credentials import storage_credential

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient


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

    def __init__(self, conn: StorageConnection, container: str, home_tenant: str = "") -> None:
        self._conn = conn
        self._container_name = container
        self.home_tenant = home_tenant
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

    # --- the storage primitives ---------------------------------------------------------------------

    def _read(self, name: str) -> tuple[str, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = _guarded(self.container.download_blob, name)
        except ResourceNotFoundError:
            return None
        return downloader.readall().decode(), str(downloader.properties.etag)

    def _names(self, prefix: str) -> list[str]:
        names: list[str] = _guarded(lambda: [b.name for b in self.container.list_blobs(name_starts_with=prefix)])
        return names

    def _write(self, name: str, text: str, *, etag: str | None = None, create: bool = False) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type="application/json")
        blob = self.container.get_blob_client(name)
        try:
            if create:
                result = _guarded(blob.upload_blob, text, overwrite=False, content_settings=settings)
            elif etag is not None:
                result = _guarded(blob.upload_blob, text, overwrite=True, content_settings=settings, etag=etag,
                                  match_condition=MatchConditions.IfNotModified)
            else:
                result = _guarded(blob.upload_blob, text, overwrite=True, content_settings=settings)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise VaultConflictError(f"vault item changed since it was read ({type(exc).__name__})") from None
        return str(result["etag"])

    def _remove(self, name: str, etag: str | None = None) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        conditions: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            _guarded(self.container.delete_blob, name, **conditions)
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        return True

    def _lease(self, name: str, seconds: int) -> str | None:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

        blob = self.container.get_blob_client(name)
        self.check_lease_seconds(seconds)
        for _ in range(2):
            try:
                return str(_guarded(blob.acquire_lease, lease_duration=seconds).id)
            except ResourceNotFoundError:
                try:  # the first refresh of this organizer: make the lock item
                    _guarded(blob.upload_blob, b"", overwrite=False)
                except ResourceExistsError:
                    pass
            except (ResourceExistsError, HttpResponseError) as exc:
                if getattr(exc, "status_code", None) == 409:
                    return None  # held (LeaseAlreadyPresent)
                raise
        return None

    def _release(self, name: str, lease_id: str) -> None:
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import BlobLeaseClient

        try:
            _guarded(BlobLeaseClient(self.container.get_blob_client(name), lease_id).release)
        except HttpResponseError:
            pass  # lapsed, or taken by someone else since

    # --- sign-in flows ------------------------------------------------------------------------------

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
