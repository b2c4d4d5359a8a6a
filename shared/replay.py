"""Operator command: move parked messages (rejected, poison, dead-lettered, failed, archived) back to their queue.

    python -m shared.replay --from SOURCE [--reason CODE] [--tenant ID] [--older-than 10m] [--dry-run]
                            [--connection-string ...]   (default: AzureWebJobsStorage)

Sources and where they go back to:
    appointments-rejected   → appointments   (the original event of each rejection record)
    appointments-poison     → appointments
    webhook-dead-letter     → webhook-outbox (the outbox message of each dead letter)
    webhook-outbox-poison   → webhook-outbox
    sms-failed              → sms-outbox     (the SMS job of each failure record)
    sms-outbox-poison       → sms-outbox
    archive                 → the queue each archived message's parked queue goes back to (the blob
                              container PARKED_ARCHIVE_CONTAINER, where archive_parked keeps parked messages
                              before their queue lifetime ends)
    all                     → every source above

A copy is always enqueued before the original is deleted (with its pop receipt), so a crash mid-way can
duplicate a message but never lose one; the app is idempotent per event id and webhook-id.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING

from shared.common.ids import is_guid
from shared.exceptions import UnreadableRecordError
from shared.settings import StorageConnection
from shared.settings_registry import setting_default
from shared.storage.overflow import BlobOverflowStore, KeptMessage
from shared.storage.parked_archive import ArchivedMessage, archive_container, archived_messages
from shared.storage.parked_routes import ARCHIVE, ROUTES, Found, Route
from shared.storage.queue_client import message_bytes, queue_client, send_creating

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

log = logging.getLogger(__name__)

# A message is hidden this long while the run looks at it; skipped ones are made visible again at the end.
DEFAULT_VISIBILITY_SECONDS = 600
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class ReplaySummary:
    """Counts of one run (over one or all sources)."""

    moved: int = 0
    skipped: int = 0
    would_move: int = 0
    unreadable: int = 0
    duplicated: int = 0
    dry_run: bool = False
    by_source: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary the command prints."""
        text = f"moved={self.moved} skipped={self.skipped}"
        if self.dry_run:
            text += f" would_move={self.would_move}"
        if self.unreadable:
            text += f" unreadable={self.unreadable}"
        if self.duplicated:
            text += f" duplicated={self.duplicated}"
        return text + (" (dry run: nothing was moved)" if self.dry_run else "")


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, total: int, stream: IO[str] | None = None, width: int = 30) -> None:
        self._label, self._total, self._width = label, max(total, 0), width
        self._stream = stream if stream is not None else sys.stderr
        self._done = 0
        self._drawn_at = 0.0

    def advance(self, step: int = 1) -> None:
        """Count step more messages handled."""
        self._done += step
        if time.monotonic() - self._drawn_at >= 0.1:
            self._draw()

    def close(self) -> None:
        """Draw the final state and end the line."""
        self._draw()
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self) -> None:
        self._drawn_at = time.monotonic()
        # The count is approximate (messages may arrive meanwhile), so the bar never overflows.
        total = max(self._total, self._done)
        filled = self._width if total == 0 else self._width * self._done // total
        self._stream.write(f"\r{self._label:<24} [{'#' * filled}{'.' * (self._width - filled)}] "
                           f"{self._done}/{total}")
        self._stream.flush()


def parse_age(text: str) -> timedelta:
    """`30s`, `10m`, `2h`, `1d` → timedelta; raise ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 10m, 2h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


async def _approximate_count(client: QueueClient) -> int | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        props = await client.get_queue_properties()
    except ResourceNotFoundError:
        return None
    return int(props.approximate_message_count or 0)


@dataclass(frozen=True)
class Filter:
    """Which messages a run moves: by reason code, by age, by tenant (each optional)."""

    reason: str | None = None
    older_than: timedelta | None = None
    tenant: str | None = None

    def keeps(self, found: Found, inserted: datetime | None) -> bool:
        """True when this message stays where it is."""
        cutoff = datetime.now(UTC) - self.older_than if self.older_than is not None else None
        too_new = cutoff is not None and inserted is not None and inserted > cutoff
        other_tenant = self.tenant is not None and found.tenant != self.tenant.lower()
        return (self.reason is not None and found.reason != self.reason) or too_new or other_tenant


class Mover:
    """Puts originals back on their target queues (reading kept blobs when a record points at one)."""

    def __init__(self, conn: StorageConnection) -> None:
        self._conn = conn
        self._targets: dict[str, QueueClient] = {}
        self._kept: dict[str, BlobOverflowStore] = {}

    async def send(self, target: str, payload: bytes | KeptMessage) -> None:
        """Enqueue the original on `target` (the queue is made if missing)."""
        if isinstance(payload, KeptMessage):
            store = self._kept.setdefault(payload.container, BlobOverflowStore(self._conn, payload.container))
            payload = await store.read(payload)
        if target not in self._targets:
            self._targets[target] = queue_client(self._conn, target)
        await send_creating(self._targets[target], payload)

    async def aclose(self) -> None:
        """Close every client made."""
        for client in self._targets.values():
            await client.close()
        for store in self._kept.values():
            await store.aclose()


async def _release(src: QueueClient, held: list[QueueMessage]) -> None:
    """Whatever was looked at and left stays where it was, visible again at once."""
    from azure.core.exceptions import HttpResponseError

    for message in held:
        try:
            await src.update_message(message.id, message.pop_receipt, visibility_timeout=0)
        except HttpResponseError:
            pass  # the hold has lapsed on its own


def _triage(route: Route, message: QueueMessage, which: Filter, summary: ReplaySummary) -> Found | None:
    """The original to move, or None when the message stays (unreadable, filtered out, or a dry run)."""
    try:
        found = route.extract(message_bytes(message))
    except UnreadableRecordError as exc:
        log.warning("replay %s: message %s left in place: %s", route.source, message.id, exc,
                    extra={"source_queue": route.source, "message_id": message.id})
        summary.unreadable += 1
        return None
    return _decide(found, message.inserted_on, which, summary)


def _decide(found: Found, inserted: datetime | None, which: Filter, summary: ReplaySummary) -> Found | None:
    """The original to move, or None when the filter keeps it or the run is dry (counted either way)."""
    if which.keeps(found, inserted):
        summary.skipped += 1
        return None
    if summary.dry_run:
        summary.would_move += 1
        return None
    return found


async def _delete_moved(src: QueueClient, route: Route, message: QueueMessage, summary: ReplaySummary) -> None:
    from azure.core.exceptions import HttpResponseError

    try:
        await src.delete_message(message.id, message.pop_receipt)
    except HttpResponseError as exc:
        summary.duplicated += 1
        log.warning("replay %s: message %s copied but not deleted (%s); it may be replayed twice",
                    route.source, message.id, exc.status_code,
                    extra={"source_queue": route.source, "message_id": message.id})


async def replay_queue(conn: StorageConnection, source: str, *, reason: str | None = None,
                       older_than: timedelta | None = None, dry_run: bool = False, progress: bool = True,
                       visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS,
                       summary: ReplaySummary | None = None, tenant: str | None = None) -> ReplaySummary:
    """Move one source queue's matching messages back to their queue (copy first, then delete). With `tenant`,
    only messages that name that tenant (`tenantId`) move."""
    route = ROUTES[source]
    which = Filter(reason, older_than, tenant)
    summary = summary or ReplaySummary(dry_run=dry_run)
    summary.dry_run = dry_run
    mover = Mover(conn)
    moved_here = 0
    async with queue_client(conn, route.source) as src:
        total = await _approximate_count(src)
        if total is None:
            log.info("replay %s: queue does not exist; nothing to do", source, extra={"source_queue": source})
            return summary
        bar = ProgressBar(source, total) if progress else None
        held: list[QueueMessage] = []
        seen: set[str] = set()
        try:
            async for message in src.receive_messages(messages_per_page=32, visibility_timeout=visibility_seconds):
                if message.id in seen:
                    break  # our hold expired and the message came round again: the run is over
                seen.add(message.id)
                if bar:
                    bar.advance()
                found = _triage(route, message, which, summary)
                if found is None:
                    held.append(message)
                    continue
                # Copy first: if the delete below fails, the worst case is a duplicate, never a loss.
                await mover.send(route.target, found.payload)
                await _delete_moved(src, route, message, summary)
                summary.moved += 1
                moved_here += 1
        finally:
            await _release(src, held)
            await mover.aclose()
            if bar:
                bar.close()
    summary.by_source[source] = summary.by_source.get(source, 0) + moved_here
    log.info("replay %s → %s: moved=%d", source, route.target, moved_here,
             extra={"source_queue": source, "target_queue": route.target, "moved": moved_here, "dry_run": dry_run})
    return summary


async def replay_archive(conn: StorageConnection, container_name: str, *, reason: str | None = None,
                         older_than: timedelta | None = None, dry_run: bool = False,
                         summary: ReplaySummary | None = None, tenant: str | None = None) -> ReplaySummary:
    """Move archived parked messages back to the queue their parked queue replays to; the blob goes after."""
    summary = summary or ReplaySummary(dry_run=dry_run)
    summary.dry_run = dry_run
    which = Filter(reason, older_than, tenant)
    mover = Mover(conn)
    moved_here = 0
    try:
        async with archive_container(conn, container_name) as container:
            async for name, archived in archived_messages(container):
                found = _archived_original(name, archived, which, summary)
                if found is None or archived is None:
                    continue
                await mover.send(ROUTES[archived.queue].target, found.payload)
                await container.delete_blob(name)
                summary.moved += 1
                moved_here += 1
    finally:
        await mover.aclose()
    summary.by_source[ARCHIVE] = summary.by_source.get(ARCHIVE, 0) + moved_here
    log.info("replay %s: moved=%d", ARCHIVE, moved_here, extra={"source_queue": ARCHIVE, "moved": moved_here})
    return summary


def _archived_original(name: str, archived: ArchivedMessage | None, which: Filter,
                       summary: ReplaySummary) -> Found | None:
    if archived is None:
        log.warning("replay archive: blob %s left in place: not an archived message", name)
        summary.unreadable += 1
        return None
    try:
        found = ROUTES[archived.queue].extract(archived.content)
    except UnreadableRecordError as exc:
        log.warning("replay archive: blob %s left in place: %s", name, exc)
        summary.unreadable += 1
        return None
    inserted = datetime.fromisoformat(archived.inserted_on) if archived.inserted_on else None
    return _decide(found, inserted, which, summary)


async def replay(conn: StorageConnection, source: str, *, reason: str | None = None,
                 older_than: timedelta | None = None, dry_run: bool = False, progress: bool = True,
                 visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS, tenant: str | None = None,
                 archive: str | None = None) -> ReplaySummary:
    """Replay one source, or every source for `all` (the archive last)."""
    sources = [*ROUTES, ARCHIVE] if source == "all" else [source]
    summary = ReplaySummary(dry_run=dry_run)
    for name in sources:
        if name == ARCHIVE:
            await replay_archive(conn, archive or setting_default("PARKED_ARCHIVE_CONTAINER"), reason=reason,
                                 older_than=older_than, dry_run=dry_run, summary=summary, tenant=tenant)
            continue
        await replay_queue(conn, name, reason=reason, older_than=older_than, dry_run=dry_run, progress=progress,
                           visibility_seconds=visibility_seconds, summary=summary, tenant=tenant)
    return summary


async def peek(conn: StorageConnection, source: str, *, limit: int = 32, archive: str | None = None) -> list[str]:
    """Up to `limit` messages of a parked queue (or the archive), one line each, leaving them where they are."""
    lines: list[str] = []
    if source == ARCHIVE:
        async with archive_container(conn, archive or setting_default("PARKED_ARCHIVE_CONTAINER")) as container:
            async for name, archived in archived_messages(container):
                if len(lines) >= limit:
                    break
                body = archived.content.decode("utf-8", "replace") if archived else "(not an archived message)"
                lines.append(f"{name}  archived={archived.archived_at if archived else '-'}  {body[:300]}")
        return lines
    from azure.core.exceptions import ResourceNotFoundError

    async with queue_client(conn, source) as client:
        try:
            messages = await client.peek_messages(max_messages=min(limit, 32))
        except ResourceNotFoundError:
            return lines
        for message in messages:
            text = message_bytes(message).decode("utf-8", "replace")
            try:
                reason = ROUTES[source].extract(message_bytes(message)).reason or "-"
            except UnreadableRecordError:
                reason = "unreadable"
            lines.append(f"{message.id}  inserted={message.inserted_on:%Y-%m-%dT%H:%M:%SZ}  "
                         f"expires={message.expires_on:%Y-%m-%d}  reason={reason}  {text[:300]}")
    return lines


def _tenant(value: str) -> str:
    if not is_guid(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a tenant id (GUID)")
    return value.lower()


def _connection(arg: str | None) -> StorageConnection:
    if arg:
        return StorageConnection(connection_string=arg)
    conn = StorageConnection.from_env(os.environ)
    if not (conn.connection_string or conn.queue_service_uri):
        raise SystemExit("no storage connection: pass --connection-string or set AzureWebJobsStorage "
                         "(or AzureWebJobsStorage__queueServiceUri / __accountName)")
    return conn


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, replay, print the summary; exit status 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m shared.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, choices=[*ROUTES, ARCHIVE, "all"],
                        help="the parked queue (or the archive) to move back; `all` for every one")
    parser.add_argument("--reason", help="only records with this reason code (rejections and dead letters)")
    parser.add_argument("--tenant", type=_tenant, help="only messages of this tenant (their tenantId); messages "
                        "that name no tenant stay where they are")
    parser.add_argument("--older-than", type=parse_age, help="only messages enqueued at least this long ago")
    parser.add_argument("--dry-run", action="store_true", help="count what would move; move nothing")
    parser.add_argument("--peek", action="store_true", help="print up to 32 messages of the source (one line "
                        "each: id, times, reason, the start of the body) and move nothing")
    parser.add_argument("--connection-string", help="default: AzureWebJobsStorage from the environment")
    parser.add_argument("--archive-container", help="the archive's blob container (default: "
                        "PARKED_ARCHIVE_CONTAINER, or parked-archive)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    archive = args.archive_container or os.environ.get("PARKED_ARCHIVE_CONTAINER")
    if args.peek:
        sources = [*ROUTES, ARCHIVE] if args.source == "all" else [args.source]
        for source in sources:
            for line in asyncio.run(peek(_connection(args.connection_string), source, archive=archive)):
                print(f"{source}  {line}")
        return 0
    summary = asyncio.run(replay(_connection(args.connection_string), args.source, reason=args.reason,
                                 older_than=args.older_than, dry_run=args.dry_run,
                                 progress=not args.no_progress, tenant=args.tenant,
                                 archive=archive))
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
