"""The one way the app's own storage clients authenticate, from the same connection the host binds with."""

from __future__ import annotations

from typing import Any

from shared.settings import StorageConnection


def storage_credential(conn: StorageConnection, *, asynchronous: bool = True) -> Any:
    """The Entra credential for an identity-based storage connection (async by default, sync for blob I/O).

    In Azure the connection names the user-assigned identity; elsewhere (a developer pointing at a real
    account) DefaultAzureCredential picks up their sign-in.
    """
    if asynchronous:
        from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
    else:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # type: ignore[assignment]
    if conn.client_id:
        return ManagedIdentityCredential(client_id=conn.client_id)
    return DefaultAzureCredential()
