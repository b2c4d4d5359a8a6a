"""Who organizes a booked appointment: a scheduler's host (e-mail or event type) → a Teams organizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from shared.common.ids import is_upn
from shared.exceptions import UnmappedOrganizerError
from shared.redaction import hash_user

WILDCARD = "*"


@dataclass(frozen=True)
class OrganizerMap:
    """INTAKE_ORGANIZER_MAP, the connected organizers and INTAKE_ORGANIZER_DOMAINS, applied in one order.

    First the host's e-mail address in the map, then the event type (keys like `calcom:event-type:<id or
    slug>`), then a host whose address is the UPN of a connected organizer (`connected`, the token vault),
    then a host whose e-mail domain is listed (the address is the UPN), then `*` (one service account for all).
    """

    entries: Mapping[str, str] = field(default_factory=dict)
    domains: tuple[str, ...] = ()
    # Whether a UPN is a connected organizer (a token-vault lookup: blocking, so translations run in a thread).
    connected: Callable[[str], bool] | None = None

    def organizer_for(self, email: str | None, event_type_keys: Iterable[str] = ()) -> str:
        """The Entra UPN or object id for a booking's host; UnmappedOrganizerError (422) when none fits."""
        address = (email or "").strip().lower()
        candidates = [address] if address else []
        candidates += [key.lower() for key in event_type_keys if key]
        for key in candidates:
            if key in self.entries:
                return self.entries[key]
        if address and is_upn(address) and self.connected is not None and self.connected(address):
            return address
        domain = address.rpartition("@")[2]
        if address and domain in self.domains and is_upn(address):
            return address
        if WILDCARD in self.entries:
            return self.entries[WILDCARD]
        # The detail names the host by hash only: it reaches logs and the scheduler's retry screens.
        host = f"host {hash_user(address)}" if address else "a booking without a host e-mail"
        raise UnmappedOrganizerError(f"{host} maps to no Teams organizer: connect it as an organizer, add it to "
                                     "INTAKE_ORGANIZER_MAP, its domain to INTAKE_ORGANIZER_DOMAINS, or a '*' entry")
