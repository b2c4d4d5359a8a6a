"""The in-memory twin of the booking alias store."""

from __future__ import annotations


class InMemoryAliasStore:
    """Aliases in a dict."""

    def __init__(self) -> None:
        self.links: dict[str, str] = {}
        self.notes: dict[str, str] = {}

    async def get(self, alias: str) -> str | None:
        """The id `alias` stands for, or None."""
        return self.links.get(alias)

    async def put(self, alias: str, target: str) -> None:
        """Record the link."""
        self.links[alias] = target

    async def get_note(self, key: str) -> str | None:
        """The note kept for `key`, or None."""
        return self.notes.get(key)

    async def put_note(self, key: str, text: str) -> None:
        """Keep the note."""
        self.notes[key] = text
