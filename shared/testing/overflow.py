"""The in-memory twin of the blob overflow store."""

from __future__ import annotations

import hashlib

from shared.storage.overflow import KeptMessage


class InMemoryOverflowStore:
    """Kept messages in a dict, named by their SHA-256 as the blob store names them."""

    def __init__(self, container: str = "message-overflow") -> None:
        self.container = container
        self.blobs: dict[str, bytes] = {}

    async def keep(self, body: bytes) -> KeptMessage:
        """Store body once per content."""
        digest = hashlib.sha256(body).hexdigest()
        kept = KeptMessage(self.container, f"messages/{digest}", len(body), digest)
        self.blobs[kept.name] = body
        return kept

    async def read(self, kept: KeptMessage) -> bytes:
        """The kept bytes, checked against their SHA-256."""
        body = self.blobs[kept.name]
        if hashlib.sha256(body).hexdigest() != kept.sha256:
            raise ValueError(f"kept message {kept.name} does not match its SHA-256")
        return body

    async def aclose(self) -> None:
        """Nothing to release."""
