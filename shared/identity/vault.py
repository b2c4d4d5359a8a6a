"""The token vault: one MSAL token cache per connected organizer, keyed by tenant and object id, written with
ETag concurrency.

Layout of the private container (TOKEN_VAULT_CONTAINER):
  organizers/<tid>/<oid>.json   the organizer's entry: MSAL serialized cache + connection health
  aliases/<key>/<tid>           the oid an identifier names in a tenant; key is the oid itself or the
                                sha256 of the lower-cased UPN, so both spellings find the entry, with or
                                without the tenant (listing aliases/<key>/ tells which tenants know it)
  flows/<sha256(state)>         a connect page's one-time sign-in flow, taken (read and deleted) by the callback
Before tenancy (read, and moved to the layout above on the next write): organizers/<oid>.json and
aliases/<sha256(upn)>, both of the app's own tenant.

The lookup rule is written once, here, over five storage primitives (read, list, write, remove) that the
blob vault (vault_blob) and its in-memory twin (shared/testing) implement.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from shared.common.clock import utc_now
from shared.common.ids import is_guid
from shared.exceptions import OrganizerNotConnectedError, VaultConflictError, VaultUnavailableError
from shared.identity.msal import ClientType
from shared.identity.tokens import OrganizerIdentity
from shared.redaction import hash_user

_ENTRY_VERSION = 1
# A refresh redeems and stores in well under this; a holder that died releases the lock when it lapses.
REFRESH_LEASE_SECONDS = 30
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
    # The organizer's tenant (the id token's tid); empty only in entries written before tenancy.
    tenant_id: str = ""
    # What the organizer consented to at connect (space-separated), for the operator page.
    scopes: str = ""
    status: str = ConnectionStatus.CONNECTED
    connected_at: str = field(default_factory=utc_now)
    last_refreshed_at: str | None = None
    last_success_at: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    # The blob's ETag when read, and where it was read from; None for an entry not yet stored. Never serialized.
    etag: str | None = field(default=None, compare=False, repr=False)
    origin: str | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        """The stored form (without the ETag)."""
        doc = asdict(self)
        del doc["etag"], doc["origin"]
        return json.dumps({"version": _ENTRY_VERSION, **doc}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, etag: str | None, origin: str | None = None) -> VaultEntry:
        """Parse a stored entry; unknown fields from newer versions are ignored."""
        doc = json.loads(text)
        known = {name for name in cls.__dataclass_fields__ if name not in ("etag", "origin")}
        return cls(**{k: v for k, v in doc.items() if k in known}, etag=etag, origin=origin)

    @classmethod
    def connected(cls, claims: dict[str, Any], cache: str, client_type: str, scopes: str = "") -> VaultEntry:
        """A fresh connection from the signed-in user's id token claims (oid, tid) and MSAL's cache."""
        now = utc_now()
        upn = str(claims.get("preferred_username") or claims.get("upn") or claims["oid"])
        return cls(oid=str(claims["oid"]).lower(), upn=upn, display_name=str(claims.get("name") or upn), cache=cache,
                   client_type=client_type, tenant_id=str(claims.get("tid") or "").lower(), scopes=scopes,
                   connected_at=now, last_refreshed_at=now, last_success_at=now)

    @property
    def identity(self) -> OrganizerIdentity:
        """The organizer's canonical identity."""
        return OrganizerIdentity(self.tenant_id, self.oid)

    def health(self) -> dict[str, Any]:
        """Everything but the token cache: what `list` and the logs may show."""
        doc = asdict(self)
        for secret_or_internal in ("cache", "etag", "origin"):
            del doc[secret_or_internal]
        return doc

    @property
    def organizer_hash(self) -> str:
        """The `organizer_hash` telemetry and alerts carry for this organizer (of its object id)."""
        return hash_user(self.oid)

    def has_hash(self, value: str) -> bool:
        """True when a telemetry hash names this organizer: events may name it by object id or by UPN."""
        return value.strip().lower() in (hash_user(self.oid), hash_user(self.upn))


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


def entry_name(tenant_id: str, oid: str) -> str:
    """Where an organizer's entry is stored."""
    return f"organizers/{tenant_id.lower()}/{oid.lower()}.json"


def alias_prefix(key: str) -> str:
    """Where the aliases of one identifier (an oid, or a UPN's hash) are, one blob per tenant."""
    return f"aliases/{key}/"


def _legacy_entry_name(oid: str) -> str:
    return f"organizers/{oid.lower()}.json"


def _legacy_alias_name(upn: str) -> str:
    return f"aliases/{upn_hash(upn)}"


class TokenVault(ABC):
    """Organizer entries (ETag-guarded, keyed by tenant and object id) and one-time sign-in flows.

    `home_tenant` (ENTRA_TENANT_ID) is the tenant of entries written before tenancy, which carry none.
    """

    home_tenant: str = ""

    # --- storage primitives, one per implementation --------------------------------------------------

    @abstractmethod
    def _read(self, name: str) -> tuple[str, str] | None:
        """(text, ETag) of a stored item, or None."""

    @abstractmethod
    def _names(self, prefix: str) -> list[str]:
        """The names of the stored items under a prefix."""

    @abstractmethod
    def _write(self, name: str, text: str, *, etag: str | None = None, create: bool = False) -> str:
        """Store text: create only (create), only over that ETag (etag), or unconditionally; the new ETag.
        VaultConflictError when the condition fails."""

    @abstractmethod
    def _remove(self, name: str, etag: str | None = None) -> bool:
        """Delete an item (only if unchanged, with an ETag); whether it was there to delete."""

    @abstractmethod
    def _lease(self, name: str, seconds: int) -> str | None:
        """Take an exclusive lease on a lock item (made if missing) for `seconds` (15-60, as blob leases); its
        id, or None while someone else holds it."""

    @abstractmethod
    def _release(self, name: str, lease_id: str) -> None:
        """Give a lease back early (a lease that has lapsed or was taken meanwhile is left alone)."""

    # --- one token refresh per organizer at a time, across every instance --------------------------

    @staticmethod
    def check_lease_seconds(seconds: int) -> int:
        """Blob leases last 15 to 60 seconds (Azure Storage answers 400 to anything else)."""
        if not 15 <= seconds <= 60:
            raise ValueError(f"a lease lasts 15 to 60 seconds, not {seconds}")
        return seconds

    @contextmanager
    def refresh_lock(self, identity: OrganizerIdentity, *, lease_seconds: int = REFRESH_LEASE_SECONDS,
                     wait_seconds: float | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> Iterator[bool]:
        """Hold the organizer's refresh lease while the body redeems and stores a refresh token.

        Waits for another holder (at most `wait_seconds`, by default one lease: a holder that died lets go
        when its lease lapses); yields whether the lease is held. A vault that cannot be reached yields False
        rather than failing: the lease only keeps instances from racing, and Entra keeps a used refresh token
        valid, so a refresh without it is still safe.
        """
        name = f"locks/{identity.tenant_id}/{identity.oid}"
        deadline = time.monotonic() + (lease_seconds + 1 if wait_seconds is None else wait_seconds)
        lease: str | None = None
        try:
            while True:
                lease = self._lease(name, lease_seconds)
                if lease is not None or time.monotonic() >= deadline:
                    break
                sleep(0.2)
        except VaultUnavailableError:
            lease = None
        try:
            yield lease is not None
        finally:
            if lease is not None:
                try:
                    self._release(name, lease)
                except VaultUnavailableError:
                    pass  # it lapses by itself

    # --- organizers: the one lookup rule ------------------------------------------------------------

    def tenants_of(self, organizer: str) -> list[str]:
        """The tenants in which an object id or UPN names a connected organizer."""
        return sorted(name.rsplit("/", 1)[1] for name in self._names(alias_prefix(_alias_key(organizer))))

    def get(self, organizer: str, tenant: str | None = None) -> VaultEntry | None:
        """The organizer's entry by object id or UPN, in `tenant` (or the only tenant they are known in), with its
        ETag; None if not connected. OrganizerNotConnectedError when, without a tenant, several tenants know it."""
        kind, value = organizer_key(organizer)
        if tenant is None:
            tenants = self.tenants_of(organizer)
            if len(tenants) > 1:
                raise OrganizerNotConnectedError(
                    f"organizer {hash_user(organizer)} is connected in {len(tenants)} tenants; the event must "
                    "carry tenantId to say which")
            if not tenants:
                return self._legacy_get(organizer)
            tenant = tenants[0]
        tenant = tenant.lower()
        oid: str | None = value
        if kind == "upn":
            alias = self._read(f"{alias_prefix(upn_hash(value))}{tenant}")
            oid = alias[0].strip() if alias else None
        found = self._read(entry_name(tenant, oid)) if oid else None
        if found is None:
            return self._legacy_get(organizer) if tenant == self.home_tenant.lower() else None
        entry = VaultEntry.from_json(found[0], found[1], entry_name(tenant, oid or ""))
        return matching_entry(entry, organizer) if entry.tenant_id == tenant else None

    def get_identity(self, identity: OrganizerIdentity) -> VaultEntry | None:
        """The entry of a canonical identity."""
        return self.get(identity.oid, identity.tenant_id or self.home_tenant or None)

    def _legacy_get(self, organizer: str) -> VaultEntry | None:
        kind, value = organizer_key(organizer)
        oid: str | None = value
        if kind == "upn":
            alias = self._read(_legacy_alias_name(value))
            oid = alias[0].strip() if alias else None
        found = self._read(_legacy_entry_name(oid)) if oid else None
        if found is None:
            return None
        entry = VaultEntry.from_json(found[0], found[1], _legacy_entry_name(oid or ""))
        entry.tenant_id = entry.tenant_id or self.home_tenant.lower()
        return matching_entry(entry, organizer)

    def save(self, entry: VaultEntry) -> VaultEntry:
        """Create (entry.etag None) or update (If-Match entry.etag), then point its aliases at it; raise
        VaultConflictError when the entry changed meanwhile. An entry read from the layout before tenancy is
        moved to its tenant's place."""
        if not entry.tenant_id:
            raise ValueError("a vault entry needs its organizer's tenant")
        name = entry_name(entry.tenant_id, entry.oid)
        moving = entry.etag is not None and entry.origin not in (None, name)
        etag = self._write(name, entry.to_json(), etag=None if moving else entry.etag,
                           create=moving or entry.etag is None)
        if moving and entry.origin is not None:
            self._remove(entry.origin, entry.etag)
            alias = self._read(_legacy_alias_name(entry.upn))
            if alias is not None and alias[0].strip() == entry.oid.lower():
                self._remove(_legacy_alias_name(entry.upn), alias[1])
        # Last writer wins for an alias: it only ever names the oid that most recently connected there.
        for key in (entry.oid.lower(), upn_hash(entry.upn)):
            self._write(f"{alias_prefix(key)}{entry.tenant_id.lower()}", entry.oid.lower())
        return replace(entry, etag=etag, origin=name)

    def delete(self, organizer: str, tenant: str | None = None) -> VaultEntry | None:
        """Remove the organizer's entry and aliases; the removed entry, or None."""
        entry = self.get(organizer, tenant)
        if entry is None:
            return None
        self._remove(entry.origin or entry_name(entry.tenant_id, entry.oid))
        for key in (entry.oid.lower(), upn_hash(entry.upn)):
            self._remove(f"{alias_prefix(key)}{entry.tenant_id.lower()}")
        self._remove(_legacy_alias_name(entry.upn))
        return entry

    def entries(self, tenant: str | None = None) -> Iterator[VaultEntry]:
        """Every entry (of one tenant, if given), each with its ETag."""
        names = self._names("organizers/")
        current = {name.rsplit("/", 1)[1] for name in names if name.count("/") == 2}
        for name in sorted(names):
            legacy = name.count("/") == 1
            if legacy and name.rsplit("/", 1)[1] in current:
                continue  # moved already; the old copy is gone on its next write
            found = self._read(name)
            if found is None:
                continue
            entry = VaultEntry.from_json(found[0], found[1], name)
            entry.tenant_id = entry.tenant_id or self.home_tenant.lower()
            if tenant is None or entry.tenant_id == tenant.lower():
                yield entry

    # --- sign-in flows ------------------------------------------------------------------------------

    @abstractmethod
    def put_flow(self, key: str, flow: dict[str, Any], ttl_seconds: float = FLOW_MAX_SECONDS) -> None:
        """Keep a sign-in flow until the callback takes it, at most ttl_seconds."""

    def take_flow(self, key: str) -> dict[str, Any] | None:
        """Read and delete a flow in one step (delete under the read's ETag: of two concurrent callbacks only
        one wins); None if absent or expired."""
        found = self._read(f"flows/{key}")
        if found is None or not self._remove(f"flows/{key}", found[1]):
            return None
        return unwrap_flow(found[0])

    @abstractmethod
    def purge_flows(self) -> int:
        """Delete abandoned expired flows; how many."""

    def store_connection(self, entry: VaultEntry) -> VaultEntry:
        """Store a fresh connection, replacing any earlier one of the same organizer in the same tenant."""
        for _ in range(5):
            current = self.get(entry.oid, entry.tenant_id or None)
            try:
                return self.save(replace(entry, etag=current.etag if current else None,
                                         origin=current.origin if current else None))
            except VaultConflictError:
                continue  # someone refreshed the old entry meanwhile; ours replaces it anyway
        raise VaultUnavailableError("the organizer's vault entry kept changing while it was being replaced")


def _alias_key(organizer: str) -> str:
    kind, value = organizer_key(organizer)
    return value if kind == "oid" else upn_hash(value)


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
