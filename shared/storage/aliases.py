"""Booking aliases: which earlier booking a scheduler's new booking id stands for.

Calendly gives a rescheduled booking a new invitee and names only the one it replaces (`old_invitee`), so a
second reschedule, or a cancel after one, names an id the app has never keyed an appointment by. Each such
link is one row in the appointments table (its own partitions, apart from the records by prefix): the new
id points at the old one, and `resolve` follows the chain back to the first booking, whose id keys the
appointment. Links are stored as they arrive rather than flattened to the first booking, so a chain that
arrived out of order still resolves once its missing link is in. Beside a key that events were keyed by, a
note keeps the latest of those events, so that a chain whose links arrived out of order can be folded into
one appointment once its missing link is in (shared/intake/chains.py).
"""

from __future__ import annotations

from typing import Protocol

from shared.settings import StorageConnection
from shared.storage.idempotency import partition_key, row_key
from shared.storage.table_rest import LazyTable, TableRestClient

PARTITION_PREFIX = "als-"
# A booking rescheduled more often than this is not a booking: the walk stops rather than loop.
MAX_HOPS = 32
# Notes share the alias partitions; the separator keeps their RowKeys apart from any alias's.
_NOTE = "note\x1f"


class AliasStore(Protocol):
    """Where each alias points (the in-memory twin in shared/testing, TableAliasStore here)."""

    async def get(self, alias: str) -> str | None:
        """The id `alias` stands for, or None."""

    async def put(self, alias: str, target: str) -> None:
        """Record that `alias` stands for `target` (the same link again is a no-op)."""

    async def get_note(self, key: str) -> str | None:
        """The latest event keyed by `key` (shared/intake/chains.py), or None."""

    async def put_note(self, key: str, text: str) -> None:
        """Keep `text` as the latest event keyed by `key` (replacing any earlier one)."""


async def resolve(store: AliasStore, key: str) -> str:
    """The first booking `key` stands for: its aliases followed back, at most MAX_HOPS, never round a loop."""
    seen = {key}
    for _ in range(MAX_HOPS):
        target = await store.get(key)
        if target is None or target in seen:
            return key
        seen.add(target)
        key = target
    return key


class TableAliasStore(LazyTable):
    """Aliases as rows of the appointments table: PartitionKey `als-` and a hash byte, the alias as RowKey."""

    def __init__(self, conn: StorageConnection, table_name: str, *, client: TableRestClient | None = None) -> None:
        super().__init__(conn, table_name, client)

    async def get(self, alias: str) -> str | None:
        """The id `alias` stands for, or None (also when the table does not exist yet)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table().get(partition_key(alias, PARTITION_PREFIX), row_key(alias))
        except ResourceNotFoundError:
            return None
        target = entity.get("Target")
        return target if isinstance(target, str) else None

    async def put(self, alias: str, target: str) -> None:
        """Insert or replace the link (a replayed delivery writes the same one)."""
        entity = {"PartitionKey": partition_key(alias, PARTITION_PREFIX), "RowKey": row_key(alias),
                  "Alias": alias, "Target": target}
        await self._write(lambda table: table.replace(entity, None))

    async def get_note(self, key: str) -> str | None:
        """The note kept for `key`, or None (also when the table does not exist yet)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table().get(partition_key(key, PARTITION_PREFIX), row_key(_NOTE + key))
        except ResourceNotFoundError:
            return None
        note = entity.get("Note")
        return note if isinstance(note, str) else None

    async def put_note(self, key: str, text: str) -> None:
        """Insert or replace the note: a row beside the key's alias row, its RowKey marked apart."""
        entity = {"PartitionKey": partition_key(key, PARTITION_PREFIX), "RowKey": row_key(_NOTE + key),
                  "Key": key, "Note": text}
        await self._write(lambda table: table.replace(entity, None))
