"""The in-memory twin of the blob token vault: the same storage primitives and ETag semantics, in a dict (the
lookup rule itself is shared: shared/identity/vault.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from shared.exceptions import VaultConflictError
from shared.identity.vault import FLOW_MAX_SECONDS, TokenVault, unwrap_flow, wrap_flow


class InMemoryTokenVault(TokenVault):
    """The vault for unit tests: same semantics as the blob vault, ETags included."""

    def __init__(self, home_tenant: str = "", *, clock: Callable[[], float] = time.monotonic) -> None:
        self.home_tenant = home_tenant
        self._lock = threading.Lock()
        self._blobs: dict[str, tuple[str, str]] = {}  # name -> (text, etag)
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (lease id, expires at)
        self._clock = clock
        self.writes = 0

    def _read(self, name: str) -> tuple[str, str] | None:
        with self._lock:
            return self._blobs.get(name)

    def _names(self, prefix: str) -> list[str]:
        with self._lock:
            return [name for name in self._blobs if name.startswith(prefix)]

    def _write(self, name: str, text: str, *, etag: str | None = None, create: bool = False) -> str:
        with self._lock:
            current = self._blobs.get(name)
            if create and current is not None:
                raise VaultConflictError(f"{name} already exists")
            if not create and etag is not None and (current is None or current[1] != etag):
                raise VaultConflictError(f"{name} changed since it was read")
            new_etag = f'"{uuid.uuid4().hex}"'
            self._blobs[name] = (text, new_etag)
            self.writes += 1
            return new_etag

    def _remove(self, name: str, etag: str | None = None) -> bool:
        with self._lock:
            current = self._blobs.get(name)
            if current is None or (etag is not None and current[1] != etag):
                return False
            del self._blobs[name]
            return True

    def _lease(self, name: str, seconds: int) -> str | None:
        self.check_lease_seconds(seconds)
        with self._lock:
            self._blobs.setdefault(name, ("", f'"{uuid.uuid4().hex}"'))  # the lock item, as the blob vault makes it
            held = self._leases.get(name)
            if held is not None and held[1] > self._clock():
                return None
            lease_id = uuid.uuid4().hex
            self._leases[name] = (lease_id, self._clock() + seconds)
            return lease_id

    def _release(self, name: str, lease_id: str) -> None:
        with self._lock:
            if self._leases.get(name, ("", 0.0))[0] == lease_id:
                del self._leases[name]

    def put_flow(self, key: str, flow: dict[str, Any], ttl_seconds: float = FLOW_MAX_SECONDS) -> None:
        """Keep a flow."""
        self._write(f"flows/{key}", wrap_flow(flow, ttl_seconds), create=True)

    def purge_flows(self) -> int:
        """Delete expired flows."""
        with self._lock:
            doomed = [n for n, (text, _) in self._blobs.items() if n.startswith("flows/") and not unwrap_flow(text)]
            for name in doomed:
                del self._blobs[name]
        return len(doomed)

    def raw(self, name: str) -> str | None:
        """A stored blob's text (tests look at what is at rest)."""
        found = self._read(name)
        return found[0] if found else None
