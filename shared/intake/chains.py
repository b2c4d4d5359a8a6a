"""A booking chain as one appointment, whatever order its links arrive in (Calendly).

Calendly gives every rebooking a new invitee and names only the one it replaces, once in each of the two
deliveries of a reschedule (`old_invitee` on the new invitee's invitee.created, `new_invitee` on the old one's
invitee.canceled), and it retries a failed delivery for up to 24 hours, in no promised order. An event is keyed
by the first booking its links lead back to (storage/aliases.resolve). When a later booking's delivery came in
before every link of an earlier reschedule, the chain was cut: its later part was keyed by the booking where
the cut is, as an appointment of its own. Each such key keeps a note of the latest event keyed by it, and when
the missing link arrives the two parts are folded into one: the latest event of the later part is applied to
the first booking's appointment (it is the newest state of the chain: every event behind a cut is of a later
booking), and the cut part's own appointment is cancelled (its meeting deleted if the app made it; a meeting
the scheduler supplied is never touched, and the first booking's appointment moves to it). The delivery that
brought the link is older than that note, so it adds nothing of its own.

A retry of an older change that arrives after a later change of its chain was enqueued is answered 200
`ignored` (applying it could only be refused as stale). Notes carry no clients (no personal data at rest
beyond what appointment records hold), so a folded event sends no SMS. A note is replaced only by an event
at least as recent (`occurredAt`, Calendly's `created_at`).
"""

from __future__ import annotations

import json

from shared.common.clock import parse_timestamp_or_none
from shared.intake.events import CANCELLED, CREATED, Ignored, IntakeEvent, build_event, stable_event_id
from shared.storage.aliases import AliasStore, resolve

# How often a delivery re-reads its key when links arrive while it is keyed (each round: one more link in).
_SETTLE_ROUNDS = 3


async def through_chain(translated: IntakeEvent | Ignored, aliases: AliasStore) -> list[IntakeEvent] | Ignored:
    """The events a delivery puts on the queue, each keyed by the first booking of its chain, or Ignored."""
    folded = await _record_link(translated.link, aliases) if translated.link is not None else []
    if folded:
        return folded
    if isinstance(translated, Ignored):
        return translated
    # A create that replaces nothing is a chain's own first booking: nothing is ever folded into its key's note,
    # so it keeps none (but a late one is still told apart from the chain's later changes).
    first_booking = translated.type == CREATED and translated.link is None
    first = await resolve(aliases, translated.appointment_id)
    for _ in range(_SETTLE_ROUNDS):
        event = translated if first == translated.appointment_id else translated.keyed_by(first)
        if not await _note(aliases, first, event, keep=not first_booking):
            # A retry of an older change, arriving after a later one of the chain was enqueued: applying it could
            # only be refused (stale, or cancelled) and tell the scheduler of a failure where there is none.
            return Ignored("a later change of this booking chain is already enqueued (a late retry)",
                           event_id=event.event_id, appointment_id=first)
        # The link that mends a cut may have come in (another delivery, at this moment) after the walk above and
        # before the note: its fold may then have missed this note, so the key is read again.
        again = first if first_booking else await resolve(aliases, first)
        if again == first:
            return [event]
        first = again
    return [event]


async def _record_link(link: tuple[str, str], aliases: AliasStore) -> list[IntakeEvent]:
    """Record the link (before the 2xx, so a later event of this booking finds it); fold a cut it mends."""
    new, old = link
    was_first = await aliases.get(new) is None
    await aliases.put(new, old)
    note = await aliases.get_note(new) if was_first else None
    if note is None:
        return []
    latest = IntakeEvent(json.loads(note))
    target = await resolve(aliases, old)
    moved = IntakeEvent({**latest.event, "appointmentId": target,
                         "id": stable_event_id("chain", "fold", new, latest.event_id)})
    await aliases.put_note(target, moved.to_message())
    cut = build_event(event_id=stable_event_id("chain", "fold-cancel", new), event_type=CANCELLED,
                      appointment_id=new, organizer=str(latest.event["organizer"]),
                      occurred_at=latest.event.get("occurredAt"))
    return [moved, cut]


async def _note(aliases: AliasStore, key: str, event: IntakeEvent, *, keep: bool = True) -> bool:
    """Keep `event` as the latest keyed by `key` (if `keep`); False when the note holds a later one."""
    current = await aliases.get_note(key)
    if current is not None:
        kept = parse_timestamp_or_none(json.loads(current).get("occurredAt"))
        arriving = parse_timestamp_or_none(event.event.get("occurredAt"))
        comparable = kept is not None and arriving is not None and None not in (kept.utcoffset(),
                                                                                arriving.utcoffset())
        if comparable and arriving < kept:  # type: ignore[operator]
            return False
    if not keep:
        return True
    await aliases.put_note(key, json.dumps({k: v for k, v in event.event.items() if k != "clients"},
                                           separators=(",", ":"), ensure_ascii=False))
    return True
