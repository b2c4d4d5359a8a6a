"""Keep-alive: redeem idle organizers' refresh tokens before Entra's 90-day inactivity limit ends them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from shared.common.clock import parse_timestamp_or_none
from shared.exceptions import OrganizerNotConnectedError, PermanentError, TransientError, VaultConflictError
from shared.identity.vault import ConnectionStatus, TokenVault, VaultEntry
from shared.identity.vault_acquirer import VaultTokenAcquirer, record_failure
from shared.redaction import hash_tenant, hash_user

log = logging.getLogger(__name__)


class KeepAliveOutcome(StrEnum):
    """What a keep-alive run did for one organizer."""

    REFRESHED = "refreshed"
    FRESH = "fresh"  # used recently enough: nothing to do
    FAILED = "failed"  # transient, or the app registration refused: the token itself may be good
    NEEDS_RECONNECT = "needs_reconnect"


@dataclass(frozen=True)
class OrganizerHealth:
    """One organizer's outcome in a keep-alive run (hash only: no UPNs in telemetry)."""

    organizer_hash: str
    tenant_hash: str
    outcome: str
    status: str
    consecutive_failures: int
    last_success_at: str | None


@dataclass
class KeepAliveReport:
    """What a keep-alive run did, per organizer and in total."""

    organizers: list[OrganizerHealth] = field(default_factory=list)
    flows_purged: int = 0

    def count(self, outcome: str) -> int:
        """How many organizers ended with this outcome."""
        return sum(1 for o in self.organizers if o.outcome == outcome)

    @property
    def unhealthy(self) -> int:
        """Organizers that need a person (reconnect) or failed transiently this run."""
        return self.count(KeepAliveOutcome.FAILED) + self.count(KeepAliveOutcome.NEEDS_RECONNECT)


def is_idle(entry: VaultEntry, idle: timedelta, now: datetime) -> bool:
    """True when the entry's refresh token has not been redeemed for `idle` or longer."""
    last = parse_timestamp_or_none(entry.last_refreshed_at) or parse_timestamp_or_none(entry.connected_at)
    return last is None or now - last >= idle


def run_keepalive(vault: TokenVault, acquirer: VaultTokenAcquirer, idle_hours: float,
                  now: datetime | None = None) -> KeepAliveReport:
    """Refresh every connected organizer idle for idle_hours; record and log each outcome. Blocking."""
    now = now or datetime.now(UTC)
    idle = timedelta(hours=idle_hours)
    report = KeepAliveReport()
    for entry in vault.entries():
        outcome = _keep_alive_one(vault, acquirer, entry, idle, now)
        latest = vault.get_identity(entry.identity) or entry
        health = OrganizerHealth(hash_user(entry.oid), hash_tenant(entry.tenant_id), outcome, latest.status,
                                 latest.consecutive_failures, latest.last_success_at)
        report.organizers.append(health)
        log.log(logging.INFO if outcome in (KeepAliveOutcome.REFRESHED, KeepAliveOutcome.FRESH) else logging.WARNING,
                "keep-alive organizer %s: %s", health.organizer_hash, outcome,
                extra={"organizer_hash": health.organizer_hash, "tenant_hash": health.tenant_hash, "outcome": outcome,
                       "status": health.status, "consecutive_failures": health.consecutive_failures})
    report.flows_purged = vault.purge_flows()
    counts = {outcome.value: report.count(outcome) for outcome in KeepAliveOutcome}
    log.log(logging.WARNING if report.unhealthy else logging.INFO,
            "keep-alive: %d organizer(s), %d refreshed, %d fresh, %d failed, %d need reconnecting",
            len(report.organizers), counts["refreshed"], counts["fresh"], counts["failed"], counts["needs_reconnect"],
            extra={"organizers": len(report.organizers), **counts, "flows_purged": report.flows_purged})
    return report


def _keep_alive_one(vault: TokenVault, acquirer: VaultTokenAcquirer, entry: VaultEntry, idle: timedelta,
                    now: datetime) -> str:
    if entry.status != ConnectionStatus.CONNECTED:
        return KeepAliveOutcome.NEEDS_RECONNECT  # refreshing a refused token again would only fail again
    if not is_idle(entry, idle, now):
        return KeepAliveOutcome.FRESH
    try:
        acquirer.refresh(entry.identity)
    except OrganizerNotConnectedError:
        return KeepAliveOutcome.NEEDS_RECONNECT  # the acquirer has marked the entry already
    except (TransientError, PermanentError) as exc:
        # Transient, or the app registration itself refused (app_misconfigured): the token is not at fault.
        _record_failure(vault, entry, f"{exc.reason}: {exc.detail}")
        return KeepAliveOutcome.FAILED
    return KeepAliveOutcome.REFRESHED


def _record_failure(vault: TokenVault, entry: VaultEntry, text: str) -> None:
    """Count a failed keep-alive on the entry; its status stays: the refresh token itself may be good."""
    for _ in range(3):
        latest = vault.get_identity(entry.identity)
        if latest is None:
            return
        try:
            vault.save(record_failure(latest, text))
            return
        except VaultConflictError:
            continue
        except TransientError:
            return  # the vault itself is down: the log line is all that can be kept


async def keep_alive(vault: TokenVault, acquirer: VaultTokenAcquirer, idle_hours: float) -> KeepAliveReport:
    """run_keepalive off the event loop (MSAL and the vault's blob client block)."""
    return await asyncio.to_thread(run_keepalive, vault, acquirer, idle_hours)
