"""The in-memory twin of the Azure Table appointment store: the same record operations, per process."""

from __future__ import annotations

from dataclasses import replace

from shared.exceptions import RecordConflictError
from shared.storage.appointments import AppointmentRecord


class InMemoryAppointmentStore:
    """Records in a dict, ETags as version numbers; no await inside an operation, so each is atomic."""

    def __init__(self) -> None:
        self._records: dict[str, AppointmentRecord] = {}
        self._version = 0

    def _stamp(self, record: AppointmentRecord) -> AppointmentRecord:
        self._version += 1
        stored = replace(record, etag=f'W/"v{self._version}"')
        self._records[record.appointment_id] = stored
        return stored

    def records(self) -> list[AppointmentRecord]:
        """Every stored record (for tests, the bench and chaos)."""
        return list(self._records.values())

    async def get(self, appointment_id: str) -> AppointmentRecord | None:
        """The record with its ETag, or None."""
        return self._records.get(appointment_id)

    async def insert(self, record: AppointmentRecord) -> AppointmentRecord:
        """Create it; RecordConflictError if a record exists."""
        if record.appointment_id in self._records:
            raise RecordConflictError("appointment record exists")
        return self._stamp(record)

    async def replace(self, record: AppointmentRecord) -> AppointmentRecord:
        """Replace it if still at `record.etag`; RecordConflictError if it changed or went."""
        if record.etag is None:
            raise ValueError("replace needs the ETag the record was read at")
        found = self._records.get(record.appointment_id)
        if found is None or found.etag != record.etag:
            raise RecordConflictError("appointment record changed")
        return self._stamp(record)

    async def delete(self, record: AppointmentRecord) -> None:
        """Delete it if still at `record.etag`; RecordConflictError if it changed or went."""
        if record.etag is None:
            raise ValueError("delete needs the ETag the record was read at")
        found = self._records.get(record.appointment_id)
        if found is None or found.etag != record.etag:
            raise RecordConflictError("appointment record changed")
        del self._records[record.appointment_id]
