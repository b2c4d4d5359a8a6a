"""The Graph emulator's meeting writes answer as Graph v1.0 documents them (../shared/FACTS.md, "Meeting lifecycle"),
and the Entra emulator's consent decides who gets the write scope."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e
DIRECTORY = json.loads((Path(__file__).resolve().parents[2] / "devstack/seed/directory.json").read_text())
CLIENT = DIRECTORY["clients"][0]
SCHEDULER, ADAMS = DIRECTORY["users"][0], DIRECTORY["users"][1]
GRAPH = "https://graph.microsoft.com/"
WRITE = GRAPH + "OnlineMeetings.ReadWrite"


def token(stack: dict[str, Any], user: dict[str, Any], scopes: str) -> str:
    answer = httpx.post(stack["entra"]["authority"] + "/oauth2/v2.0/token", verify=_tls(stack), data={
        "grant_type": "password", "client_id": CLIENT["client_id"], "client_secret": CLIENT["client_secret"],
        "username": user["upn"], "password": user["password"], "scope": scopes})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _tls(stack: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=stack["ca_bundle"])


@pytest.fixture
def graph(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    """Graph as the scheduler, with the write scope."""
    headers = {"Authorization": f"Bearer {token(stack, SCHEDULER, WRITE)}"}
    with httpx.Client(base_url=stack["graph"]["base_url"], verify=_tls(stack), headers=headers) as client:
        yield client


@pytest.fixture
def admin(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack["graph"]["admin_url"] + "/", verify=_tls(stack)) as client:
        client.post("reset").raise_for_status()
        yield client
        client.post("reset").raise_for_status()


def test_create_or_get_is_keyed_on_the_external_id_201_then_200(graph, admin):
    external_id = uuid.uuid4().hex
    first = graph.post("/me/onlineMeetings/createOrGet", json={
        "externalId": external_id, "subject": "Consult", "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z", "participants": {"attendees": [{"upn": ADAMS["upn"]}]}})
    again = graph.post("/me/onlineMeetings/createOrGet", json={
        "externalId": external_id, "startDateTime": "2027-01-01T09:00:00Z", "endDateTime": "2027-01-01T10:00:00Z"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["startDateTime"].startswith("2026-12-01T09:00:00")  # unchanged: reschedule is a PATCH
    # The meeting is a real one: its join URL resolves, and the JoinWebUrl filter finds it
    meeting = first.json()
    url = graph.get(f"/users/{SCHEDULER['oid']}/onlineMeetings/{meeting['id']}/getVirtualAppointmentJoinWebUrl()")
    assert url.status_code == 200 and url.json()["value"].startswith("https://visit.teams.microsoft.com/")
    mine = admin.get("meetings", params={"organizer": SCHEDULER["upn"]}).json()
    assert [m["externalId"] for m in mine if m["id"] == meeting["id"]] == [external_id]


def test_create_or_get_default_times_and_refusals(graph):
    made = graph.post("/me/onlineMeetings/createOrGet", json={"externalId": uuid.uuid4().hex}).json()
    from datetime import datetime

    start, end = (datetime.fromisoformat(made[k].replace("0Z", "+00:00")) for k in ("startDateTime", "endDateTime"))
    assert (end - start).total_seconds() == 3600
    no_start = graph.post("/me/onlineMeetings/createOrGet",
                          json={"externalId": uuid.uuid4().hex, "endDateTime": "2026-12-01T09:00:00Z"})
    assert no_start.status_code == 400
    other = graph.post(f"/users/{ADAMS['oid']}/onlineMeetings/createOrGet", json={"externalId": "x"})
    assert other.status_code == 400
    assert "With delegated permission only /me endpoint is supported." in other.json()["error"]["message"]
    assert graph.post("/me/onlineMeetings/createOrGet", json={}).status_code == 400


def test_patch_needs_both_times_and_delete_is_204_then_404(graph):
    meeting = graph.post("/me/onlineMeetings/createOrGet", json={"externalId": uuid.uuid4().hex}).json()
    path = f"/me/onlineMeetings/{meeting['id']}"
    assert graph.patch(path, json={"startDateTime": "2026-12-01T09:00:00Z"}).status_code == 400
    typed = graph.patch(path, json={"@odata.type": "#microsoft.graph.onlineMeeting", "subject": "x"})
    assert typed.status_code == 400 and "do not support updating" in typed.json()["error"]["message"]
    moved = graph.patch(path, json={"startDateTime": "2026-12-02T09:00:00Z", "endDateTime": "2026-12-02T10:00:00Z"})
    assert moved.status_code == 200 and moved.json()["startDateTime"].startswith("2026-12-02T09:00:00")
    assert graph.delete(path).status_code == 204
    assert graph.delete(path).status_code == 404


def test_writes_need_the_write_scope(stack):
    read_only = token(stack, SCHEDULER, GRAPH + "OnlineMeetings.Read")
    with httpx.Client(base_url=stack["graph"]["base_url"], verify=_tls(stack),
                      headers={"Authorization": f"Bearer {read_only}"}) as client:
        refused = client.post("/me/onlineMeetings/createOrGet", json={"externalId": "x"})
    assert refused.status_code == 403 and "OnlineMeetings.ReadWrite" in refused.json()["error"]["message"]


def test_sms_is_202_and_403_without_teams_premium(stack, admin):
    sms = token(stack, SCHEDULER, GRAPH + "VirtualAppointmentNotification.Send")
    with httpx.Client(base_url=stack["graph"]["base_url"], verify=_tls(stack),
                      headers={"Authorization": f"Bearer {token(stack, SCHEDULER, WRITE)}"}) as writer:
        meeting = writer.post("/me/onlineMeetings/createOrGet", json={"externalId": uuid.uuid4().hex}).json()
    body = {"attendees": [{"phoneNumber": "+14255550100", "timeZone": "Pacific Standard Time"}],
            "messageType": "confirmation"}
    with httpx.Client(base_url=stack["graph"]["base_url"], verify=_tls(stack),
                      headers={"Authorization": f"Bearer {sms}"}) as client:
        path = f"/me/onlineMeetings/{meeting['id']}"
        assert client.post(f"{path}/sendVirtualAppointmentSms", json=body).status_code == 202
        reminder = {"attendees": body["attendees"], "remindBeforeTimeInMinutesType": "mins15"}
        assert client.post(f"{path}/sendVirtualAppointmentReminderSms", json=reminder).status_code == 202
        admin.put("config", json={"teams_premium": False}).raise_for_status()
        assert client.post(f"{path}/sendVirtualAppointmentSms", json=body).status_code == 403
    assert [s["type"] for s in admin.get("config").json()["sms_sent"]] == ["confirmation", "mins15"]


def test_a_scope_without_admin_consent_needs_the_users_own(stack):
    entra = httpx.Client(base_url=stack["entra"]["admin_url"] + "/", verify=_tls(stack))
    try:
        entra.put("consent", json={"client_id": CLIENT["client_id"],
                                   "scopes": ["VirtualAppointment.Read"]}).raise_for_status()
        answer = httpx.post(stack["entra"]["authority"] + "/oauth2/v2.0/token", verify=_tls(stack), data={
            "grant_type": "password", "client_id": CLIENT["client_id"], "client_secret": CLIENT["client_secret"],
            "username": SCHEDULER["upn"], "password": SCHEDULER["password"], "scope": WRITE})
        assert answer.status_code == 400 and 65001 in answer.json()["error_codes"]
    finally:
        entra.post("reset").raise_for_status()
        entra.close()
