"""The overflow-store contract, run against the in-memory twin and the blob store (on Azurite) alike."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.storage.overflow import BlobOverflowStore, KeptMessage, OverflowStore, fits_queue
from shared.testing.overflow import InMemoryOverflowStore

pytestmark = pytest.mark.contract


@pytest.fixture(params=["memory", "blob"])
async def store(request: pytest.FixtureRequest, azurite_conn: Any) -> AsyncIterator[OverflowStore]:
    if request.param == "memory":
        yield InMemoryOverflowStore()
        return
    blob_store = BlobOverflowStore(azurite_conn, "overflow-" + uuid.uuid4().hex[:12])
    yield blob_store
    await blob_store.aclose()


async def test_kept_bytes_come_back_exactly_and_are_named_by_their_content(store):
    body = b"\xff\xfe not text" + bytes(range(256)) * 300
    kept = await store.keep(body)
    assert kept.bytes == len(body) and kept.sha256 == hashlib.sha256(body).hexdigest()
    assert await store.read(kept) == body
    # Keeping the same bytes again (a retry, a second copy) is the same blob.
    assert await store.keep(body) == kept


async def test_a_reference_survives_the_wire(store):
    kept = await store.keep(b"{}")
    assert KeptMessage.from_dict(kept.to_dict()) == kept
    with pytest.raises(ValueError):
        KeptMessage.from_dict({"name": "x"})


async def test_a_tampered_reference_is_refused(store):
    kept = await store.keep(b"original")
    forged = KeptMessage(kept.container, kept.name, kept.bytes, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ValueError):
        await store.read(forged)


def test_what_fits_a_queue_message():
    # 64 KiB of base64 text: 49,152 bytes of UTF-8, and no more.
    assert fits_queue("x" * 49_152) and not fits_queue("x" * 49_153)
    assert not fits_queue("\U0001F600" * 12_289)  # four bytes each
