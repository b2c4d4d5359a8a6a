"""The in-memory twin of the blob token vault: the same layout and ETag semantics, in a dict."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from shared.exceptions import VaultConflictError
from shared.identity.vault import (
    FLOW_MAX_SECONDS,
    TokenVault,
    VaultEntry,
    matching_entry,
    organizer_key,
    unwrap_flow,
    upn_hash,
    wrap_flow,
)


class InMemoryTokenVault(TokenVault):
    """The vault for unit tests: same semantics as the blob vault, ETags included."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, tuple[str, str]] = {}  # name -> (text, etag)
        self.writes = 0

    def _put(self, name: str, text: str, etag: str | None, *, create: bool) -> str:
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

    def _read(self, name: str) -> tuple[str, str] | None:
        with self._lock:
            return self._blobs.get(name)

    def _oid_for(self, organizer: str) -> str | None:
        kind, value = organizer_key(organizer)
        if kind == "oid":
            return value
        alias = self._read(f"aliases/{upn_hash(value)}")
        return alias[0] if alias else None

    def get(self, organizer: str) -> VaultEntry | None:
        """The organizer's entry by object id or UPN."""
        oid = self._oid_for(organizer)
        found = self._read(f"organizers/{oid}.json") if oid else None
        if found is None:
            return None
        entry = VaultEntry.from_json(found[0], found[1])
        return matching_entry(entry, organizer)

    def save(self, entry: VaultEntry) -> VaultEntry:
        """Create or update under the entry's ETag."""
        name = f"organizers/{entry.oid.lower()}.json"
        etag = self._put(name, entry.to_json(), entry.etag, create=entry.etag is None)
        self._put(f"aliases/{upn_hash(entry.upn)}", entry.oid.lower(), None, create=False)
        return replace(entry, etag=etag)

    def delete(self, organizer: str) -> VaultEntry | None:
        """Remove the entry and its alias."""
        entry = self.get(organizer)
        if entry is None:
            return None
        with self._lock:
            self._blobs.pop(f"organizers/{entry.oid.lower()}.json", None)
            self._blobs.pop(f"aliases/{upn_hash(entry.upn)}", None)
        return entry

    def entries(self) -> Iterator[VaultEntry]:
        """Every entry."""
        with self._lock:
            found = [(n, v) for n, v in self._blobs.items() if n.startswith("organizers/")]
        for _, (text, etag) in sorted(found):
            yield VaultEntry.from_json(text, etag)

    def put_flow(self, key: str, flow: dict[str, Any], ttl_seconds: float = FLOW_MAX_SECONDS) -> None:
        """Keep a flow."""
        self._put(f"flows/{key}", wrap_flow(flow, ttl_seconds), None, create=True)

    def take_flow(self, key: str) -> dict[str, Any] | None:
        """Read and delete a flow."""
        with self._lock:
            found = self._blobs.pop(f"flows/{key}", None)
        return unwrap_flow(found[0]) if found else None

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
