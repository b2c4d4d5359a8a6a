"""What the queue ledger cannot see: organizers' connections, token traffic, Graph calls, and why webhooks repeat.

Computed from the token vault (the operator's view: `python -m shared.organizers list`), the emulators'
counters and the receiver's deliveries, never from the app's own counters.

- ``wrongly_disconnected``: organizers marked needs_reconnect or revoked although the run never revoked
  their grant (a chaos run revokes nothing, so every one counts).
- token requests per organizer per access-token lifetime, across all instances: tokens the Entra emulator
  issued for the organizer, divided by the run's length in usable lifetimes (lifetime minus the 5-minute
  refresh margin the app and MSAL keep).
- Graph calls per event, and why any event needed more than one: events with a joinWebUrl need two (the
  lookup, then the join URL); the rest of the surplus is the injected faults answered (503, 429, hangs),
  401s, and successful calls beyond what the ready events needed (`resolved_again`: a joinWebUrl lookup
  made again because the join-URL call after it failed and the event was retried, or an event resolved a
  second time after a kill or a taken-over claim).
- duplicate deliveries split in two: a second 2xx delivery of a webhook id within the POST window of an
  instance killed mid-delivery is at-least-once delivery after a crash (`redelivered_after_kill`, which
  receivers absorb by webhook-id, as Standard Webhooks says); any other is a real `duplicate_deliveries`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.ledger import NO_REPORT, decode_queue_text
from chaos.workload import READY, PlannedEvent

# The app and MSAL renew an access token this long before it expires.
REFRESH_MARGIN_SECONDS = 300
# A kill explains a repeated delivery when it fell this soon after the first delivery reached the receiver:
# the receiver's slowest answer (3 s), the response on its way back, and the record write.
KILL_WINDOW_SECONDS = 10.0


@dataclass
class Accounts:
    """The run's other findings."""

    organizer_status: dict[str, str]
    wrongly_disconnected: list[str]
    token_requests: dict[str, int]
    token_lifetime: int
    run_seconds: float
    graph_calls: int
    graph_needed: int
    graph_surplus: dict[str, int]
    duplicate_deliveries: list[str]
    redelivered_after_kill: list[str]
    instances: int
    refreshes_by_grant: dict[str, int] = field(default_factory=dict)

    @property
    def lifetimes(self) -> float:
        """How many usable access-token lifetimes the run lasted."""
        return max(1.0, self.run_seconds / max(1, self.token_lifetime - REFRESH_MARGIN_SECONDS))

    def token_line(self) -> str:
        """Token requests per organizer per lifetime."""
        per = ", ".join(f"{upn}={n / self.lifetimes:.1f}" for upn, n in sorted(self.token_requests.items()))
        return (f"tokens: requests per organizer per token lifetime (all {self.instances} instances) {per or '-'} "
                f"| lifetime {self.token_lifetime}s ({self.token_lifetime - REFRESH_MARGIN_SECONDS}s usable), "
                f"{self.lifetimes:.1f} lifetimes | grants {self.refreshes_by_grant}")

    def graph_line(self) -> str:
        """Graph calls per event and the surplus explained."""
        events = max(1, self.graph_needed)
        why = ", ".join(f"{k}={v}" for k, v in self.graph_surplus.items() if v) or "none"
        return (f"graph: {self.graph_calls} calls where the ready events and attendance checks needed "
                f"{self.graph_needed} "
                f"({self.graph_calls / events:.2f} per needed call; an event with a joinWebUrl needs 2) "
                f"| surplus: {why}")

    def organizers_line(self) -> str:
        """Every organizer's connection at the end."""
        return "organizers: " + ", ".join(f"{upn}={status}" for upn, status in sorted(self.organizer_status.items()))


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def split_duplicates(deliveries: Iterable[Mapping[str, Any]],
                     kill_walls: Iterable[float]) -> tuple[list[str], list[str]]:
    """(real duplicates, redeliveries a kill explains): webhook ids delivered (2xx) more than once."""
    kills = sorted(kill_walls)
    times: dict[str, list[float]] = defaultdict(list)
    for delivery in deliveries:
        status = int(delivery.get("status") or 0)
        webhook_id = delivery.get("webhook_id")
        if delivery.get("verified") and 200 <= status < 300 and webhook_id:
            times[webhook_id].append(_parse_time(delivery.get("received_at")) or 0.0)
    real, explained = [], []
    for webhook_id, seen in times.items():
        seen.sort()
        for first, again in itertools.pairwise(seen):
            if any(first <= kill <= min(again, first + KILL_WINDOW_SECONDS) for kill in kills):
                explained.append(webhook_id)
            else:
                real.append(webhook_id)
    return real, explained


def attendance_reads(contents: Iterable[str]) -> int:
    """Graph calls the told attendance needed: the reports list, each session's records, and, for a report that
    never came, the second look when the wait ended (records on the `attendance` queue, one per appointment end)."""
    told: dict[tuple[str, str], int] = {}
    for content in contents:
        try:
            record = json.loads(decode_queue_text(content))
        except ValueError:
            continue
        if isinstance(record, dict):
            sessions = record.get("sessions")
            told[(str(record.get("appointmentId")), str(record.get("endDateTime")))] = (
                1 + (sessions if isinstance(sessions, int) else 0) + (record.get("reason") == NO_REPORT))
    return sum(told.values())


def graph_accounts(planned: Iterable[PlannedEvent], places: Mapping[str, set[str]],
                   stats: Mapping[str, Any], *, attendance_reads: int = 0) -> tuple[int, int, dict[str, int]]:
    """(calls made, calls needed, surplus by cause) from the Graph emulator's counters; `attendance_reads`: the
    calls the attendance checks needed."""
    needed = attendance_reads
    for event in planned:
        # An event that ended ready needed one call, two when it named its meeting by joinWebUrl (the lookup
        # first); calls made for events that ended elsewhere are all surplus (faults, or no token).
        if READY in places.get(event.key, set()):
            needed += _needed_calls(event)
    by_status = {str(k): int(v) for k, v in (stats.get("by_status") or {}).items()}
    calls = int(stats.get("requests") or 0)
    answered = sum(by_status.values())
    surplus = {
        "503": by_status.get("503", 0),
        "429": by_status.get("429", 0),
        "hang": by_status.get("504", 0) + max(0, calls - answered),
        "401": by_status.get("401", 0),
        "other_errors": sum(n for s, n in by_status.items()
                            if not s.startswith("2") and s not in ("503", "429", "504", "401")),
        "resolved_again": max(0, sum(n for s, n in by_status.items() if s.startswith("2")) - needed),
    }
    return calls, needed, surplus


def _needed_calls(event: PlannedEvent) -> int:
    """Graph calls a ready event needs: a lifecycle create makes the meeting then reads its join URL, a
    reschedule PATCHes it, a cancel DELETEs it; a supplied meeting is one read, two by joinWebUrl (the lookup
    first). A reschedule that overtakes its create does the create, so its surplus shows as resolved_again."""
    if event.kind == "lifecycle":
        return 2 if event.extra.get("type") == "created" else 1
    return 2 if '"joinWebUrl"' in event.text else 1


def wrongly_disconnected(health: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], list[str]]:
    """(status by organizer, organizers not connected) from the vault's health records (nothing was revoked)."""
    status = {str(h.get("upn")): str(h.get("status")) for h in health}
    return status, sorted(upn for upn, s in status.items() if s != "connected")
