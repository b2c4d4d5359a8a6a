"""The schedulers' signatures, checked as the vendors document them."""

from __future__ import annotations

import time

import pytest

from shared.exceptions import WebhookSignatureError
from shared.intake.signatures import verify_calcom, verify_calendly
from tests import intake_payloads as vendor

pytestmark = pytest.mark.unit
SECRET = "calcom-secret"
KEY = "calendly-signing-key"
BODY = vendor.body(vendor.calcom())


def test_calcom_signature_over_the_raw_body():
    verify_calcom(SECRET, vendor.calcom_headers(SECRET, BODY)["X-Cal-Signature-256"], BODY)
    for header, body in ((None, BODY), ("", BODY), (vendor.calcom_headers("other", BODY)["X-Cal-Signature-256"], BODY),
                         (vendor.calcom_headers(SECRET, BODY)["X-Cal-Signature-256"], BODY + b" ")):
        with pytest.raises(WebhookSignatureError):
            verify_calcom(SECRET, header, body)


def test_calendly_signature_timestamp_and_tolerance():
    now = int(time.time())
    verify_calendly(KEY, vendor.calendly_headers(KEY, BODY, now)["Calendly-Webhook-Signature"], BODY)
    stale = vendor.calendly_headers(KEY, BODY, now - 181)["Calendly-Webhook-Signature"]
    future = vendor.calendly_headers(KEY, BODY, now + 181)["Calendly-Webhook-Signature"]
    forged = vendor.calendly_headers("not-the-key", BODY, now)["Calendly-Webhook-Signature"]
    swapped = vendor.calendly_headers(KEY, BODY, now)["Calendly-Webhook-Signature"].replace(f"t={now}", f"t={now - 1}")
    for header in (stale, future, forged, swapped, None, "v1=abc", f"t={now}", "t=x,v1=abc"):
        with pytest.raises(WebhookSignatureError):
            verify_calendly(KEY, header, BODY)
