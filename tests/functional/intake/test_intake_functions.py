"""The intake functions called as the host calls them: a real func.HttpRequest, a concrete func.Out for the
queue output binding. A 2xx sets exactly one contract-valid message; every refusal sets none."""

from __future__ import annotations

import json
import time

import azure.functions as func
import pytest
from standardwebhooks import Webhook

from tests import intake_payloads as vendor
from tests.fakes import CapturingOut
from tests.schemas import assert_message_valid, assert_valid

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def settings(function_app_module):
    return function_app_module.services.settings


def call(indexed, name: str, body: bytes, headers: dict[str, str]) -> tuple[func.HttpResponse, CapturingOut]:
    out = CapturingOut()
    request = func.HttpRequest("POST", f"http://localhost/api/{name}", headers=headers, body=body)
    response = indexed[name.replace("/", "_").replace("-", "_")].get_user_function()(req=request, appointments=out)
    return response, out


def intake_calcom(indexed, body, headers):
    return call(indexed, "intake/calcom", body, headers)


def test_calcom_booking_is_enqueued_once_signed(indexed, settings):
    # GIVEN a Cal.com BOOKING_CREATED signed with the configured secret
    body = vendor.body(vendor.calcom())
    response, out = intake_calcom(indexed, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
    # THEN 202 with the event id, and the event is the binding's output, valid against the contract
    assert response.status_code == 202
    answer = json.loads(response.get_body())
    assert_valid("intake-accepted.json", answer)
    assert_message_valid("appointments", out.value)
    assert json.loads(out.value)["id"] == answer["eventId"]
    # AND a replay of the same delivery maps to the same event id
    again, replayed = intake_calcom(indexed, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
    assert json.loads(again.get_body())["eventId"] == answer["eventId"] and replayed.value == out.value


@pytest.mark.parametrize("headers", [{}, {"X-Cal-Signature-256": "00" * 32}])
def test_calcom_bad_signature_is_401_and_enqueues_nothing(indexed, headers):
    response, out = intake_calcom(indexed, vendor.body(vendor.calcom()), headers)
    assert response.status_code == 401 and out.value is None
    assert response.mimetype == "application/problem+json"
    assert_valid("problem.json", json.loads(response.get_body()))


def test_calcom_unmappable_and_unmapped(indexed, settings):
    cases = [(vendor.calcom(startTime="tomorrow"), 400, "invalid_payload"),
             (vendor.calcom(organizer={"email": "stranger@elsewhere.example"}), 422, "organizer_unmapped"),
             (b"{not json", 400, "invalid_json")]
    for doc, status, reason in cases:
        body = doc if isinstance(doc, bytes) else vendor.body(doc)
        response, out = intake_calcom(indexed, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
        problem = json.loads(response.get_body())
        assert (response.status_code, problem["reason"], out.value) == (status, reason, None)
        assert "stranger" not in problem["detail"]


def test_calcom_other_trigger_is_200_with_nothing_enqueued(indexed, settings):
    body = vendor.body(vendor.calcom("MEETING_ENDED"))
    response, out = intake_calcom(indexed, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
    assert response.status_code == 200 and out.value is None
    assert_valid("intake-accepted.json", json.loads(response.get_body()))


def test_calendly_signed_fresh_and_stale(indexed, settings):
    key = settings.calendly_webhook_signing_key
    body = vendor.body(vendor.calendly())
    response, out = call(indexed, "intake/calendly", body, vendor.calendly_headers(key, body))
    assert response.status_code == 202
    assert_message_valid("appointments", out.value)
    stale = vendor.calendly_headers(key, body, int(time.time()) - 600)
    response, out = call(indexed, "intake/calendly", body, stale)
    assert response.status_code == 401 and out.value is None


def test_calendly_reschedule_cancel_half_enqueues_nothing(indexed, settings):
    body = vendor.body(vendor.calendly("invitee.canceled", rescheduled=True, new_invitee="BBBB"))
    response, out = call(indexed, "intake/calendly", body,
                         vendor.calendly_headers(settings.calendly_webhook_signing_key, body))
    assert response.status_code == 200 and out.value is None


def test_standard_webhooks_sender(indexed, settings):
    # GIVEN a contract-v1 event signed by the standardwebhooks reference library
    event = {"type": "appointment.created", "appointmentId": "apt-sw", "organizer": "scheduler@contoso.test",
             "joinWebUrl": vendor.TEAMS_LINK}
    body = vendor.body(event)
    signer = Webhook(settings.intake_webhook_secrets[0])
    from datetime import UTC, datetime
    headers = {"webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "webhook-timestamp": str(int(time.time()))}
    headers["webhook-signature"] = signer.sign(headers["webhook-id"], datetime.now(UTC), body.decode())
    headers["webhook-timestamp"] = str(int(time.time()))
    response, out = call(indexed, "intake/standard-webhooks", body, headers)
    assert response.status_code == 202, response.get_body()
    assert json.loads(out.value)["id"] == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert_message_valid("appointments", out.value)
    response, out = call(indexed, "intake/standard-webhooks", body, {**headers, "webhook-signature": "v1,AAAA"})
    assert response.status_code == 401 and out.value is None


def test_an_intake_without_its_secret_is_off(indexed, function_app_module, monkeypatch):
    from dataclasses import replace
    services = function_app_module.services
    monkeypatch.setitem(services.__dict__, "intake", replace(services.intake, calcom_secret=None))
    body = vendor.body(vendor.calcom())
    response, out = intake_calcom(indexed, body, vendor.calcom_headers("anything", body))
    assert response.status_code == 404 and out.value is None
