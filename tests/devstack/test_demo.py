"""`make demo` on a stack of its own: organizers of two tenants connect and their join links are printed, with the
app proving itself to Entra by its managed identity and no client secret in the settings it uses."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_demo_connects_two_tenants_and_prints_their_links_without_a_secret(stack: dict[str, Any]) -> None:
    assert not stack["settings"].get("ENTRA_CLIENT_SECRET") and stack["settings"]["ENTRA_APP_CREDENTIAL"] == "federated"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ENTRA_CLIENT_SECRET", None)
    run = subprocess.run([sys.executable, "-m", "devstack.demo", "--state-dir", stack["state_dir"]], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "app credential: federated" in out and "no client secret in the settings" in out
    assert "Admin consent granted" in out
    for organizer in ("scheduler@fabrikam.test (Fabrikam Clinics)", "scheduler@contoso.test (Contoso"):
        assert re.search(re.escape(organizer) + r".* opens the connect link and signs in: Connected", out), organizer
    assert "5/5 join URLs arrived in 'join-urls' (Contoso (the app's home tenant): 3, Fabrikam Clinics: 2)" in out
    # AND with meeting management on: an appointment without a meeting gets both links, then is moved and cancelled
    for kind in ("appointment.joinurl.ready", "appointment.joinurl.updated", "appointment.joinurl.cancelled"):
        assert re.search(rf"webhook \S+  {re.escape(kind)}  signature valid", out), kind
    assert "staff link (organizerJoinUrl): https://teams.microsoft.com/" in out
    assert out.count("signature valid") == 5 + 3
    # AND the appointment that ended: its session played, the scheduler hears who attended and for how long
    assert re.search(r"webhook att_\S+  appointment.attendance  outcome=attended  organizer 1500 s, clients \[1200\] s",
                     out), out[-2000:]
    # AND calendar-backed: the staff member moves the appointment in "Outlook" and the scheduler hears it
    assert "calendar subscription (me/events, clientState, lifecycle URL): active" in out, out[-2000:]
    assert re.search(r"appointment.rescheduled_by_organizer  2026-12-08T15:00:00.000Z – 2026-12-08T15:45:00.000Z  "
                     r"version 2  link held: True", out), out[-2000:]
    # Every confidential token request proved the app with the federated credential: no secret was ever sent.
    verify = ssl.create_default_context(cafile=stack["ca_bundle"])
    stats = httpx.get(stack["entra"]["admin_url"] + "/stats", verify=verify).json()
    assert stats["by_credential"].get("secret", 0) == 0 and stats["by_credential"]["federated"] >= 1
    assert stats["managed_identity_requests"] >= 1
