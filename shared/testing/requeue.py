"""The in-memory twin of QueueRequeuer."""

from __future__ import annotations


class InMemoryRequeuer:
    """Remembers what would have been enqueued, and with which delay."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    async def requeue(self, text: str, delay_seconds: int) -> None:
        """Remember text and its delay."""
        self.sent.append((text, delay_seconds))

    async def aclose(self) -> None:
        """Nothing to release."""
