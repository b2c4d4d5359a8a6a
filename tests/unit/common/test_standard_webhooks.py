"""Standard Webhooks signatures: ours verify with the reference library, and its signatures verify with ours."""

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.common.standard_webhooks import decode_secret, sign, signature_header, signing_headers, verify
from shared.exceptions import WebhookSignatureError

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"an-older-secret-being-rotated-out!").decode()
BODY = b'{"type":"appointment.joinurl.ready","timestamp":"2026-11-03T20:26:10.344Z","data":{"x":"\xc3\xa9"}}'


def test_signature_verifies_with_the_reference_library():
    headers = signing_headers([SECRET], "evt-1_ready", BODY)
    assert Webhook(SECRET).verify(BODY, headers)["type"] == "appointment.joinurl.ready"
    assert headers["webhook-signature"].startswith("v1,")


def test_known_vector_matches_the_reference_signer():
    stamp = 1674087231
    reference = Webhook(SECRET).sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", datetime.fromtimestamp(stamp, UTC),
                                     BODY.decode())
    assert sign(SECRET, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", stamp, BODY) == reference


def test_rotation_signs_with_both_secrets_and_either_verifies():
    headers = signing_headers([SECRET, OLD_SECRET], "evt-1_ready", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(BODY, headers)
    Webhook(OLD_SECRET).verify(BODY, headers)


def test_reference_signature_verifies_with_ours():
    stamp = int(time.time())
    signature = Webhook(SECRET).sign("evt-2_failed", datetime.fromtimestamp(stamp, UTC), BODY.decode())
    headers = {"Webhook-Id": "evt-2_failed", "Webhook-Timestamp": str(stamp), "Webhook-Signature": signature}
    assert verify([OLD_SECRET, SECRET], headers, BODY) == "evt-2_failed"


def test_tampered_body_or_id_fails_both_verifiers():
    headers = signing_headers([SECRET], "evt-1_ready", BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY + b" ", headers)
    with pytest.raises(WebhookSignatureError, match="no signature"):
        verify([SECRET], headers | {"webhook-id": "evt-9_ready"}, BODY)


def test_old_and_future_timestamps_are_refused():
    now = time.time()
    for stamp in (now - 301, now + 301):
        headers = {"webhook-id": "a", "webhook-timestamp": str(int(stamp)),
                   "webhook-signature": signature_header([SECRET], "a", int(stamp), BODY)}
        with pytest.raises(WebhookSignatureError, match="tolerance"):
            verify([SECRET], headers, BODY, now=now)


def test_missing_headers_and_unknown_schemes_are_refused():
    with pytest.raises(WebhookSignatureError, match="missing"):
        verify([SECRET], {}, BODY)
    stamp = int(time.time())
    headers = {"webhook-id": "a", "webhook-timestamp": str(stamp), "webhook-signature": "v1a,AAAA v2,zzz"}
    with pytest.raises(WebhookSignatureError, match="no signature"):
        verify([SECRET], headers, BODY)


@pytest.mark.parametrize("secret", ["0123456789", "whsec_not*base64", "whsec_" + base64.b64encode(b"short").decode()])
def test_malformed_secrets_are_refused_without_echoing_them(secret):
    with pytest.raises(WebhookSignatureError) as caught:
        decode_secret(secret)
    assert secret not in str(caught.value)


def test_unpadded_secret_is_accepted_like_the_reference():
    assert decode_secret(SECRET.rstrip("=")) == decode_secret(SECRET)


@pytest.mark.parametrize("msg_id", ["", "a.b", "a b"])
def test_ids_that_would_make_the_signed_content_ambiguous_are_refused(msg_id):
    with pytest.raises(WebhookSignatureError):
        sign(SECRET, msg_id, 1, BODY)
