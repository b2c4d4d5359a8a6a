"""Timer functions run on one instance at a time: the listener lock, a blob lease, as the host holds it.

The Functions host starts a timer function's listener only on the instance that holds a lease on the blob
`azure-webjobs-hosts/locks/<host id>/<function>.Listener` (SingletonMode.Listener); the others try again
now and then, and take over when the holder stops renewing (it stopped, crashed, or lost storage). Here
the lease is 15 s (Azure's shortest; the host's ListenerLockPeriod is 60 s by default) and a waiting
instance retries every 5 s (the host: ListenerLockRecoveryPollingInterval, a minute), so that a local run
recovers quickly; host.json's `singleton` section sets both, as it does for the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")

LOCK_CONTAINER = "azure-webjobs-hosts"
DEFAULT_LEASE_SECONDS = 15
DEFAULT_RECOVERY_SECONDS = 5.0


class ListenerLock:
    """One function's listener lease: acquire (waiting), keep renewed in the background, release."""

    def __init__(self, connection_string: str, host_id: str, function_name: str, *,
                 lease_seconds: int = DEFAULT_LEASE_SECONDS,
                 recovery_seconds: float = DEFAULT_RECOVERY_SECONDS) -> None:
        self.connection_string = connection_string
        self.blob_name = f"locks/{host_id}/{function_name}.Listener"
        self.lease_seconds = max(15, min(60, lease_seconds))  # the range Azure (and Azurite) accept
        self.recovery_seconds = recovery_seconds
        self._service: Any = None
        self._lease: Any = None
        self._renewed_at = 0.0
        self._renewer: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """Whether this instance holds the lease now (renewed within its duration)."""
        return self._lease is not None and time.monotonic() - self._renewed_at < self.lease_seconds

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait until the lease is ours (True) or ``stopping`` is set (False)."""
        from azure.storage.blob.aio import BlobServiceClient

        if self._service is None:
            self._service = BlobServiceClient.from_connection_string(self.connection_string)
        blob = self._service.get_blob_client(LOCK_CONTAINER, self.blob_name)
        while not stopping.is_set():
            try:
                with contextlib.suppress(ResourceExistsError):
                    await self._service.get_container_client(LOCK_CONTAINER).create_container()
                with contextlib.suppress(ResourceExistsError):
                    await blob.upload_blob(b"", overwrite=False)
                self._lease = await blob.acquire_lease(lease_duration=self.lease_seconds)
                self._renewed_at = time.monotonic()
                self._renewer = asyncio.create_task(self._renew_until_lost())
                log.info("listener lock %s acquired", self.blob_name)
                return True
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409: another instance holds it; anything else is worth a line
                    log.warning("listener lock %s: %s", self.blob_name, type(exc).__name__)
            except Exception as exc:  # storage unreachable (paused, restarting): try again later
                log.warning("listener lock %s: %s", self.blob_name, type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.recovery_seconds)
        return False

    async def _renew_until_lost(self) -> None:
        while self._lease is not None:
            await asyncio.sleep(self.lease_seconds / 3)
            if self._lease is None:
                return
            try:
                await self._lease.renew()
                self._renewed_at = time.monotonic()
            except (ResourceNotFoundError, HttpResponseError) as exc:
                if getattr(exc, "status_code", None) in (404, 409, 412):
                    log.warning("listener lock %s lost", self.blob_name)
                    self._lease = None
                    return
                log.warning("listener lock %s: renewal failed (%s)", self.blob_name, type(exc).__name__)
            except Exception as exc:
                log.warning("listener lock %s: renewal failed (%s)", self.blob_name, type(exc).__name__)
            if not self.held:
                log.warning("listener lock %s expired before it could be renewed", self.blob_name)
                self._lease = None

    async def release(self) -> None:
        """Give the lease up (so another instance takes over at once) and close the client."""
        lease, self._lease = self._lease, None
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer
            self._renewer = None
        if lease is not None:
            with contextlib.suppress(Exception):
                await lease.release()
        if self._service is not None:
            await self._service.close()
            self._service = None
