"""The in-memory twins of QueueRequeuer and QueueWriter."""

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


class InMemoryQueueWriter:
    """The in-memory twin of QueueWriter: remembers what was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str, *, delay_seconds: int = 0) -> None:
        """Remember text."""
        self.sent.append(text)

    async def send_all(self, texts: list[str]) -> None:
        """Remember each text."""
        self.sent.extend(texts)

    async def aclose(self) -> None:
        """Nothing to release."""
