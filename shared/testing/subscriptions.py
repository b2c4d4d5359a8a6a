"""The in-memory twin of the subscription store."""

from __future__ import annotations

import uuid
from dataclasses import replace

from shared.exceptions import RecordConflictError
from shared.storage.subscriptions import SubscriptionRecord


class InMemorySubscriptionStore:
    """Rows in dicts, ETags as fresh UUIDs."""

    def __init__(self) -> None:
        self.rows: dict[str, SubscriptionRecord] = {}
        self.index: dict[str, str] = {}
        self.events: dict[str, str] = {}

    async def get(self, organizer_key: str) -> SubscriptionRecord | None:
        """The organizer's row, or None."""
        return self.rows.get(organizer_key)

    async def by_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        """The row whose current subscription is `subscription_id`, or None."""
        record = self.rows.get(self.index.get(subscription_id, ""))
        return record if record is not None and record.subscription_id == subscription_id else None

    async def put(self, record: SubscriptionRecord) -> SubscriptionRecord:
        """Insert (no ETag) or replace if still at its ETag."""
        current = self.rows.get(record.organizer_key)
        if (record.etag is None) != (current is None) or (current is not None and current.etag != record.etag):
            raise RecordConflictError("the organizer's subscription row changed")
        if record.subscription_id:
            self.index[record.subscription_id] = record.organizer_key
        stored = replace(record, etag=uuid.uuid4().hex)
        self.rows[record.organizer_key] = stored
        return stored

    async def delete(self, organizer_key: str) -> None:
        """Remove both rows."""
        record = self.rows.pop(organizer_key, None)
        if record is not None and record.subscription_id:
            self.index.pop(record.subscription_id, None)

    async def all(self) -> list[SubscriptionRecord]:
        """Every organizer's row."""
        return list(self.rows.values())

    async def remember_event(self, event_id: str, appointment_id: str) -> None:
        """Keep the event's appointment."""
        self.events[event_id] = appointment_id

    async def appointment_of(self, event_id: str) -> str | None:
        """The appointment of an event seen before, or None."""
        return self.events.get(event_id)

    async def aclose(self) -> None:
        """Nothing to release."""
