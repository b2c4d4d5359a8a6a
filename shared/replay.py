"""Operator command: move rejected, poison and dead-lettered messages back to the queue they came from.

    python -m shared.replay --from appointments-rejected|appointments-poison|webhook-dead-letter|
                                   webhook-outbox-poison|all [--reason CODE] [--older-than 10m] [--dry-run]
                                   [--connection-string ...]   (default: AzureWebJobsStorage from the environment)

A copy is always enqueued before the original is deleted (with its pop receipt), so a crash mid-way can
duplicate a message but never lose one; the app is idempotent per event id and webhook-id.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING

from shared import queues
from shared.exceptions import UnreadableRecordError
from shared.queues import WEBHOOK_DEAD_LETTER, WEBHOOK_OUTBOX, WEBHOOK_OUTBOX_POISON
from shared.settings import StorageConnection
from shared.storage.overflow import BlobOverflowStore, KeptMessage
from shared.storage.queue_client import queue_client

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

log = logging.getLogger(__name__)

# A message is hidden this long while the run looks at it; skipped ones are made visible again at the end.
DEFAULT_VISIBILITY_SECONDS = 600
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _record_field(name: str) -> Callable[[bytes], tuple[bytes | KeptMessage, str | None]]:
    """A record's copy of the original: `<name>` (text), `<name>Base64` (not UTF-8), or `<name>Blob` (kept)."""
    def extract(content: bytes) -> tuple[bytes | KeptMessage, str | None]:
        try:
            doc = json.loads(content)
        except (ValueError, RecursionError):
            raise UnreadableRecordError("record is not JSON") from None
        if not isinstance(doc, dict):
            raise UnreadableRecordError("record is not a JSON object")
        payload: bytes | KeptMessage | None = None
        if isinstance(doc.get(name), str) and doc[name]:
            payload = doc[name].encode("utf-8")
        elif isinstance(doc.get(name + "Base64"), str):
            # A message that was not UTF-8 text is kept as base64: put back exactly those bytes.
            try:
                payload = base64.b64decode(doc[name + "Base64"], validate=True)
            except ValueError:
                raise UnreadableRecordError(f"record's {name + 'Base64'!r} is not base64") from None
        elif doc.get(name + "Blob") is not None:
            try:
                payload = KeptMessage.from_dict(doc[name + "Blob"])
            except ValueError:
                raise UnreadableRecordError(f"record's {name + 'Blob'!r} is not a kept-message reference") from None
        if not payload:
            raise UnreadableRecordError(f"record has no {name!r}")
        reason = doc.get("reason")
        return payload, reason if isinstance(reason, str) else None

    return extract


def _as_is(content: bytes) -> tuple[bytes | KeptMessage, str | None]:
    # A poison message is the original message itself; it carries no reason.
    return content, None


@dataclass(frozen=True)
class Route:
    """Where a source queue's messages go back to, and how to get the original out of each."""

    source: str
    target: str
    extract: Callable[[bytes], tuple[bytes | KeptMessage, str | None]]


ROUTES: dict[str, Route] = {
    route.source: route for route in (
        Route(queues.APPOINTMENTS_REJECTED, queues.APPOINTMENTS, _record_field("originalMessage")),
        Route(queues.APPOINTMENTS_POISON, queues.APPOINTMENTS, _as_is),
        Route(WEBHOOK_DEAD_LETTER, WEBHOOK_OUTBOX, _record_field("outboxMessage")),
        Route(WEBHOOK_OUTBOX_POISON, WEBHOOK_OUTBOX, _as_is),
    )
}


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


async def _ensure_queue(client: QueueClient) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        await client.create_queue()
    except ResourceExistsError:
        pass


def _content(message: QueueMessage) -> bytes:
    content = message.content
    return content if isinstance(content, bytes) else str(content or "").encode("utf-8")


async def replay_queue(conn: StorageConnection, source: str, *, reason: str | None = None,
                       older_than: timedelta | None = None, dry_run: bool = False, progress: bool = True,
                       visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS,
                       summary: ReplaySummary | None = None) -> ReplaySummary:
    """Move one source queue's matching messages back to their queue (copy first, then delete)."""
    from azure.core.exceptions import HttpResponseError

    route = ROUTES[source]
    summary = summary or ReplaySummary(dry_run=dry_run)
    summary.dry_run = dry_run
    cutoff = datetime.now(UTC) - older_than if older_than is not None else None
    async with queue_client(conn, route.source) as src, queue_client(conn, route.target) as dst:
        total = await _approximate_count(src)
        if total is None:
            log.info("replay %s: queue does not exist; nothing to do", source, extra={"source_queue": source})
            return summary
        if not dry_run:
            await _ensure_queue(dst)
        bar = ProgressBar(source, total) if progress else None
        held: list[QueueMessage] = []
        kept: dict[str, BlobOverflowStore] = {}
        seen: set[str] = set()
        moved_here = 0
        try:
            async for message in src.receive_messages(messages_per_page=32, visibility_timeout=visibility_seconds):
                if message.id in seen:
                    # Our hold expired and the message came round again: the run is over.
                    break
                seen.add(message.id)
                if bar:
                    bar.advance()
                try:
                    payload, record_reason = route.extract(_content(message))
                except UnreadableRecordError as exc:
                    log.warning("replay %s: message %s left in place: %s", source, message.id, exc,
                                extra={"source_queue": source, "message_id": message.id})
                    summary.unreadable += 1
                    held.append(message)
                    continue
                inserted = message.inserted_on
                too_new = cutoff is not None and inserted is not None and inserted > cutoff
                if (reason is not None and record_reason != reason) or too_new:
                    summary.skipped += 1
                    held.append(message)
                    continue
                if dry_run:
                    summary.would_move += 1
                    held.append(message)
                    continue
                if isinstance(payload, KeptMessage):
                    store = kept.setdefault(payload.container, BlobOverflowStore(conn, payload.container))
                    payload = await store.read(payload)
                # Copy first: if the delete below fails, the worst case is a duplicate, never a loss.
                await dst.send_message(payload)
                try:
                    await src.delete_message(message.id, message.pop_receipt)
                except HttpResponseError as exc:
                    summary.duplicated += 1
                    log.warning("replay %s: message %s copied but not deleted (%s); it may be replayed twice",
                                source, message.id, exc.status_code,
                                extra={"source_queue": source, "message_id": message.id})
                summary.moved += 1
                moved_here += 1
        finally:
            # Whatever was looked at and left stays where it was, visible again at once.
            for message in held:
                try:
                    await src.update_message(message.id, message.pop_receipt, visibility_timeout=0)
                except HttpResponseError:
                    pass  # the hold has lapsed on its own
            for store in kept.values():
                await store.aclose()
            if bar:
                bar.close()
    summary.by_source[source] = summary.by_source.get(source, 0) + moved_here
    log.info("replay %s → %s: moved=%d", source, route.target, moved_here,
             extra={"source_queue": source, "target_queue": route.target, "moved": moved_here, "dry_run": dry_run})
    return summary


async def replay(conn: StorageConnection, source: str, *, reason: str | None = None,
                 older_than: timedelta | None = None, dry_run: bool = False, progress: bool = True,
                 visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS) -> ReplaySummary:
    """Replay one source, or every source for `all`."""
    sources = list(ROUTES) if source == "all" else [source]
    summary = ReplaySummary(dry_run=dry_run)
    for name in sources:
        await replay_queue(conn, name, reason=reason, older_than=older_than, dry_run=dry_run, progress=progress,
                           visibility_seconds=visibility_seconds, summary=summary)
    return summary


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
    parser.add_argument("--from", dest="source", required=True, choices=[*ROUTES, "all"])
    parser.add_argument("--reason", help="only records with this reason code (rejections and dead letters)")
    parser.add_argument("--older-than", type=parse_age, help="only messages enqueued at least this long ago")
    parser.add_argument("--dry-run", action="store_true", help="count what would move; move nothing")
    parser.add_argument("--connection-string", help="default: AzureWebJobsStorage from the environment")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = asyncio.run(replay(_connection(args.connection_string), args.source, reason=args.reason,
                                 older_than=args.older_than, dry_run=args.dry_run,
                                 progress=not args.no_progress))
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
