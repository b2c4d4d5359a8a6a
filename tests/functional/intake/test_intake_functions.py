"""The intake functions invoked through Azure's Python worker as the host invokes them, with the queue output
binding's messages captured. A 2xx sets exactly one contract-valid message; every refusal sets none."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks import Webhook

from devstack.harness import call_http
from shared.exceptions import TableStoreUnavailableError
from shared.testing.aliases import InMemoryAliasStore
from shared.testing.vault import InMemoryTokenVault
from tests import intake_payloads as vendor
from tests.schemas import assert_message_valid, assert_valid

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def settings(function_app_module):
    return function_app_module.services.settings


def _in_place_of(services, name: str, twin):
    """Yield `twin` as `services.<name>` for one test, then put back what was there."""
    previous = services.__dict__.get(name)
    setattr(services, name, twin)
    yield twin
    services.__dict__.pop(name, None)
    if previous is not None:
        setattr(services, name, previous)


@pytest.fixture(autouse=True)
def vault(function_app_module):
    """The organizers the intakes may map a host to by UPN: an in-memory token vault (no storage here)."""
    yield from _in_place_of(function_app_module.services, "vault", InMemoryTokenVault())


@pytest.fixture(autouse=True)
def aliases(function_app_module):
    """Calendly's rebooked invitees: an in-memory alias store (no storage here)."""
    yield from _in_place_of(function_app_module.services, "aliases", InMemoryAliasStore())


class Enqueued:
    """What the `appointments` output binding would write: None, one message's text, or a list of texts."""

    def __init__(self, texts: list[str]) -> None:
        self.value = texts if len(texts) > 1 else (texts[0] if texts else None)


async def call(worker, name: str, body: bytes, headers: dict[str, str]):
    called = await call_http(worker, name.replace("/", "_").replace("-", "_"), method="POST", path=f"/api/{name}",
                             headers=headers, body=body)
    return called.http, Enqueued(called.texts("appointments"))


async def intake_calcom(worker, body, headers):
    return await call(worker, "intake/calcom", body, headers)


async def test_calcom_booking_is_enqueued_once_signed(worker, settings):
    # GIVEN a Cal.com BOOKING_CREATED signed with the configured secret
    body = vendor.body(vendor.calcom())
    response, out = await intake_calcom(worker, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
    # THEN 202 with the event id, and the event is the binding's output, valid against the contract
    assert response.status_code == 202
    answer = json.loads(response.get_body())
    assert_valid("intake-accepted.json", answer)
    assert_message_valid("appointments", out.value)
    assert json.loads(out.value)["id"] == answer["eventId"]
    # AND a replay of the same delivery maps to the same event id
    again, replayed = await intake_calcom(worker, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
    assert json.loads(again.get_body())["eventId"] == answer["eventId"] and replayed.value == out.value


@pytest.mark.parametrize("headers", [{}, {"X-Cal-Signature-256": "00" * 32}])
async def test_calcom_bad_signature_is_401_and_enqueues_nothing(worker, headers):
    response, out = await intake_calcom(worker, vendor.body(vendor.calcom()), headers)
    assert response.status_code == 401 and out.value is None
    assert response.mimetype == "application/problem+json"
    assert_valid("problem.json", json.loads(response.get_body()))


async def test_calcom_unmappable_and_unmapped(worker, settings):
    cases = [(vendor.calcom(startTime="tomorrow"), 400, "invalid_payload"),
             (vendor.calcom(organizer={"email": "stranger@elsewhere.example"}), 422, "organizer_unmapped"),
             (b"{not json", 400, "invalid_json")]
    for doc, status, reason in cases:
        body = doc if isinstance(doc, bytes) else vendor.body(doc)
        response, out = await intake_calcom(worker, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
        problem = json.loads(response.get_body())
        assert (response.status_code, problem["reason"], out.value) == (status, reason, None)
        assert "stranger" not in problem["detail"]


async def test_calcom_other_trigger_is_200_with_nothing_enqueued(worker, settings):
    body = vendor.body(vendor.calcom("MEETING_ENDED"))
    response, out = await intake_calcom(worker, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
    assert response.status_code == 200 and out.value is None
    assert_valid("intake-accepted.json", json.loads(response.get_body()))


@pytest.mark.parametrize("doc", [vendor.calcom_scheduled("MEETING_ENDED"), vendor.calcom_request_reschedule()])
async def test_calcom_flat_scheduled_trigger_and_request_reschedule_are_200_ignored(worker, settings, doc):
    # Cal.com's scheduleTrigger sends MEETING_ENDED as the flat booking row (no payload); its requestReschedule
    # handler sends a BOOKING_CANCELLED marked requestReschedule. Both signed as Cal.com signs: 200, nothing queued.
    body = vendor.body(doc)
    response, out = await intake_calcom(worker, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
    assert response.status_code == 200 and out.value is None
    assert_valid("intake-accepted.json", json.loads(response.get_body()))
    assert_valid("calcom-webhook.json", doc)
    # A forged one is still 401 whatever its trigger
    response, out = await intake_calcom(worker, body, vendor.calcom_headers("not-the-secret", body))
    assert response.status_code == 401 and out.value is None


async def test_calendly_signed_fresh_and_stale(worker, settings):
    key = settings.calendly_webhook_signing_key
    body = vendor.body(vendor.calendly())
    response, out = await call(worker, "intake/calendly", body, vendor.calendly_headers(key, body))
    assert response.status_code == 202
    assert_message_valid("appointments", out.value)
    stale = vendor.calendly_headers(key, body, int(time.time()) - 600)
    response, out = await call(worker, "intake/calendly", body, stale)
    assert response.status_code == 401 and out.value is None


async def test_calendly_reschedule_cancel_half_enqueues_nothing(worker, settings):
    body = vendor.body(vendor.calendly("invitee.canceled", rescheduled=True, new_invitee="BBBB"))
    response, out = await call(worker, "intake/calendly", body,
                         vendor.calendly_headers(settings.calendly_webhook_signing_key, body))
    assert response.status_code == 200 and out.value is None


async def test_calendly_rebookings_all_name_the_first_booking(worker, settings, aliases):
    # GIVEN a booking rescheduled twice (Calendly: a new invitee each time, naming only the one it replaces)
    key = settings.calendly_webhook_signing_key
    answers = []
    for doc in (vendor.calendly(invitee="AAAA"), vendor.calendly(invitee="BBBB", old_invitee="AAAA"),
                vendor.calendly(invitee="CCCC", old_invitee="BBBB"), vendor.calendly("invitee.canceled",
                                                                                     invitee="CCCC")):
        body = vendor.body(doc)
        response, out = await call(worker, "intake/calendly", body, vendor.calendly_headers(key, body))
        assert response.status_code == 202
        assert_message_valid("appointments", out.value)
        answers.append(json.loads(out.value))
    # THEN the second reschedule and the cancel after it are about the first booking's appointment too
    first = answers[0]["appointmentId"]
    assert [a["appointmentId"] for a in answers] == [first] * 4
    assert [a["type"] for a in answers] == ["appointment.created", "appointment.rescheduled",
                                            "appointment.rescheduled", "appointment.cancelled"]
    # AND each link was recorded as it arrived (new invitee → the one it replaced)
    assert sorted(aliases.links.values()) == [first, first.replace("AAAA", "BBBB")]


async def test_a_cut_calendly_chain_is_folded_when_its_missing_link_arrives(worker, settings, aliases):
    # GIVEN the second reschedule's invitee.created (C, old_invitee B) delivered before anything of the first
    # (Calendly retries a failed delivery for up to 24 hours): it is keyed by B, as an appointment of its own
    key = settings.calendly_webhook_signing_key
    answers = []
    for doc in (vendor.calendly(invitee="CCCC", old_invitee="BBBB", start_time="2026-12-03T11:00:00Z",
                                end_time="2026-12-03T11:30:00Z"),
                vendor.calendly(invitee="BBBB", old_invitee="AAAA", start_time="2026-12-02T10:00:00Z",
                                end_time="2026-12-02T10:30:00Z")):
        body = vendor.body(doc)
        response, out = await call(worker, "intake/calendly", body, vendor.calendly_headers(key, body))
        assert response.status_code == 202
        answers.append(out.value)
    cut = json.loads(answers[0])
    assert cut["appointmentId"].endswith("/invitees/BBBB")
    # WHEN the first reschedule's invitee.created (B, old_invitee A) comes in
    # THEN two messages, one each: the latest booking's times applied to the first booking's appointment, and
    # the cut part's appointment cancelled
    assert isinstance(answers[1], list) and len(answers[1]) == 2
    for message in answers[1]:
        assert_message_valid("appointments", message)
    moved, gone = (json.loads(m) for m in answers[1])
    assert moved["appointmentId"].endswith("/invitees/AAAA") and moved["type"] == "appointment.rescheduled"
    assert moved["startDateTime"] == "2026-12-03T11:00:00Z" and "clients" not in moved
    assert gone == {**gone, "type": "appointment.cancelled", "appointmentId": cut["appointmentId"]}


async def test_calendly_alias_store_down_is_503_and_enqueues_nothing(worker, settings, aliases, monkeypatch):
    async def down(alias, target):
        raise TableStoreUnavailableError("table PUT failed: ConnectionError")

    monkeypatch.setattr(aliases, "put", down)
    body = vendor.body(vendor.calendly(invitee="BBBB", old_invitee="AAAA"))
    response, out = await call(worker, "intake/calendly", body,
                               vendor.calendly_headers(settings.calendly_webhook_signing_key, body))
    assert response.status_code == 503 and out.value is None


async def test_standard_webhooks_sender(worker, settings):
    # GIVEN a contract-v1 event signed by the standardwebhooks reference library
    event = {"type": "appointment.created", "appointmentId": "apt-sw", "organizer": "scheduler@contoso.test",
             "joinWebUrl": vendor.TEAMS_LINK}
    body = vendor.body(event)
    signer = Webhook(settings.intake_webhook_secrets[0])
    from datetime import UTC, datetime
    headers = {"webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "webhook-timestamp": str(int(time.time()))}
    headers["webhook-signature"] = signer.sign(headers["webhook-id"], datetime.now(UTC), body.decode())
    headers["webhook-timestamp"] = str(int(time.time()))
    response, out = await call(worker, "intake/standard-webhooks", body, headers)
    assert response.status_code == 202, response.get_body()
    assert json.loads(out.value)["id"] == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert_message_valid("appointments", out.value)
    response, out = await call(worker, "intake/standard-webhooks", body, {**headers, "webhook-signature": "v1,AAAA"})
    assert response.status_code == 401 and out.value is None


async def test_an_intake_without_its_secret_is_off(worker, function_app_module, monkeypatch):
    from dataclasses import replace
    services = function_app_module.services
    monkeypatch.setitem(services.__dict__, "intake", replace(services.intake, calcom_secret=None))
    body = vendor.body(vendor.calcom())
    response, out = await intake_calcom(worker, body, vendor.calcom_headers("anything", body))
    assert response.status_code == 404 and out.value is None


async def test_a_host_who_is_a_connected_organizer_needs_no_mapping(worker, settings, vault):
    # GIVEN a Cal.com host whose e-mail is the UPN of an organizer connected in the token vault
    from tests.auth_fakes import FakeIdentityPlatform, connected_entry

    # (outside INTAKE_ORGANIZER_DOMAINS and INTAKE_ORGANIZER_MAP: only the vault knows them)
    entry = vault.save(connected_entry(FakeIdentityPlatform(), upn="pat.host@fabrikam.example"))
    body = vendor.body(vendor.calcom(organizer={"email": entry.upn.upper(), "name": "Scheduler"}))
    # WHEN the booking arrives
    response, out = await intake_calcom(worker, body, vendor.calcom_headers(settings.calcom_webhook_secret, body))
    # THEN it is enqueued for that organizer, though no map names them
    assert response.status_code == 202 and json.loads(out.value)["organizer"] == entry.upn.lower()
