"""Idempotency keys and the pure claim rule; the stores' contract is in tests/contract/test_idempotency_stores.py."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.exceptions import KeyInProgressError
from shared.storage.idempotency import (
    COMPLETED,
    IN_PROGRESS,
    ClaimKind,
    StoredClaim,
    decide_claim,
    partition_key,
    row_key,
)

pytestmark = pytest.mark.unit


def test_row_keys_are_table_safe_and_distinct():
    assert row_key("evt-1") == "k_evt-1"
    unsafe = row_key("a/b#c?d\\e\x01")
    assert unsafe.startswith("h_") and not any(ch in unsafe for ch in "/\\#?\x01")
    assert row_key("x" * 300).startswith("h_") and row_key("a/b") != row_key("a\\b")


def test_partition_keys_are_stable_and_spread_over_256_partitions():
    # GIVEN many event keys
    keys = [f"evt:bench-{i}" for i in range(5000)]
    partitions = {partition_key(key) for key in keys}
    # THEN each key always lands in the same partition, and the records spread over all 256
    assert partition_key("evt:a") == partition_key("evt:a")
    assert len(partitions) == 256 and all(p.startswith("evt-") and len(p) == 6 for p in partitions)


NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def _claim(state: str, started_ago: float, expires_in: float = 3600) -> StoredClaim:
    return StoredClaim(state, NOW - timedelta(seconds=started_ago), NOW + timedelta(seconds=expires_in), "{}")


@pytest.mark.parametrize(("existing", "kind"), [
    (None, ClaimKind.NEW),
    (_claim(COMPLETED, 10), ClaimKind.COMPLETED),
    (_claim(COMPLETED, 10, expires_in=0), ClaimKind.NEW),      # expired: as if absent
    (_claim(IN_PROGRESS, 61), ClaimKind.TAKEN_OVER),            # stale: its worker died
    (_claim(IN_PROGRESS, 61, expires_in=-1), ClaimKind.NEW),
])
def test_the_claim_rule(existing, kind):
    assert decide_claim(existing, NOW, stale_after_seconds=60) is kind


def test_a_fresh_claim_in_progress_says_when_to_look_again():
    with pytest.raises(KeyInProgressError) as caught:
        decide_claim(_claim(IN_PROGRESS, 10), NOW, stale_after_seconds=60)
    assert caught.value.retry_after == pytest.approx(50)
