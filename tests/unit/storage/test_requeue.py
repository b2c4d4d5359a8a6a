"""The requeue envelope: the original message survives re-enqueueing byte for byte, with its attempt count."""

import json

import pytest

from shared.storage.requeue import MAX_REQUEUE_DELAY_SECONDS, backoff, requeue_delay, unwrap_requeued, wrap_requeued

pytestmark = pytest.mark.unit
FIELDS = {"appointmentId": "apt-1", "organizer": "dr.adams@contoso.test", "onlineMeetingId": "m-1"}


def test_requeue_wrapping_keeps_the_original_byte_for_byte():
    original = json.dumps({"id": "e", **FIELDS}, indent=3)
    delivery = unwrap_requeued(wrap_requeued(original, 2, "throttled"))
    assert delivery.text == original and delivery.attempt == 2
    assert unwrap_requeued(original).attempt == 0


@pytest.mark.parametrize("text", ['{"$requeue": 1, "message": "x"}', '{"$requeue": {"attempt": 1}}',
                                  "$requeue not json",
                                  '["$requeue"]'])
def test_anything_else_is_an_original(text):
    assert unwrap_requeued(text).text == text and unwrap_requeued(text).attempt == 0


@pytest.mark.parametrize(("wait", "delay"), [
    (None, 1), (float("nan"), 1), (0.0, 1), (-5.0, 1),
    (1.0, 1), (1.0004, 2),      # rounded up: `int(x + 0.999)`, two of the three earlier copies, gave 1 here
    (29.2, 30), (8 * 24 * 3600.0, MAX_REQUEUE_DELAY_SECONDS),  # the webhook copies had no 7-day cap
])
def test_requeue_delay_is_whole_seconds_a_queue_can_hide(wait, delay):
    assert requeue_delay(wait) == delay


def test_backoff_triples_from_its_base():
    assert [backoff(5.0, attempt) for attempt in range(4)] == [5.0, 15.0, 45.0, 135.0]
    assert backoff(5.0, -1) == 5.0
