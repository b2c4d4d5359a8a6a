"""The Entra emulator can hold a refresh grant before or after its redeem, for chaos runs to kill inside it."""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

DIRECTORY = json.loads((Path(__file__).resolve().parents[2] / "devstack" / "seed" / "directory.json").read_text())
CLIENT = DIRECTORY["clients"][0]
ADAMS = next(u for u in DIRECTORY["users"] if u["upn"].startswith("dr.adams"))
SCOPE = "https://graph.microsoft.com/VirtualAppointment.Read offline_access"


def _parked(admin: httpx.Client) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        parked: list[dict[str, Any]] = admin.get("hold").json()["parked"]
        if parked:
            return parked
        time.sleep(0.05)
    raise AssertionError("no refresh grant was parked")


@pytest.mark.parametrize(("stage", "action", "status"), [("before_redeem", "drop", 503),
                                                          ("after_redeem", "answer", 200)])
def test_a_refresh_grant_is_held_until_released(stack: dict[str, Any], stage: str, action: str, status: int) -> None:
    url = stack["entra"]["authority"] + "/oauth2/v2.0/token"
    auth = {"client_id": CLIENT["client_id"], "client_secret": CLIENT["client_secret"]}
    tls = ssl.create_default_context(cafile=stack["ca_bundle"])
    with httpx.Client(verify=tls, timeout=30) as http, \
            httpx.Client(base_url=stack["entra"]["admin_url"] + "/", verify=tls) as admin:
        first = http.post(url, data={**auth, "grant_type": "password", "username": ADAMS["upn"],
                                     "password": ADAMS["password"], "scope": SCOPE})
        refresh_token = first.json()["refresh_token"]
        # GIVEN a hold armed at this stage
        assert admin.put("hold", json={"stage": stage, "times": 1}).json()["remaining"] == 1
        answers: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: answers.append(http.post(url, data={
            **auth, "grant_type": "refresh_token", "refresh_token": refresh_token})))
        # WHEN a refresh grant arrives
        caller.start()
        # THEN it waits, and the admin API names the user and the caller's port
        [parked] = _parked(admin)
        assert parked["stage"] == stage and parked["user"] == ADAMS["oid"] and parked["peer_port"] > 0
        assert not answers
        # WHEN it is released
        admin.request("DELETE", "hold", json={"action": action})
        caller.join(10)
        # THEN the caller gets the answer the action says, and nothing stays armed
        assert answers[0].status_code == status
        state = admin.get("hold").json()
        assert (state["stage"], state["remaining"], state["parked"]) == (None, 0, [])
        if stage == "before_redeem":
            # A grant dropped before its redeem left the refresh token as it was: it still works.
            again = http.post(url, data={**auth, "grant_type": "refresh_token", "refresh_token": refresh_token})
            assert again.status_code == 200, again.text
