"""The requeue envelope: the original message survives re-enqueueing byte for byte, with its attempt count."""

import json

import pytest

from shared.storage.requeue import unwrap_requeued, wrap_requeued

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
