"""`python -m shared.diagnose` against the local stack: every step answers, as the emulator assumes."""

from __future__ import annotations

import io
from typing import Any

import pytest

from shared.diagnose import run
from tests.e2e.test_lifecycle import SCHEDULER

pytestmark = pytest.mark.e2e


async def test_every_step_answers_against_the_emulator(stack: dict[str, Any], app_module: Any) -> None:
    from shared.services import Services
    from shared.settings import load_settings

    services = Services(load_settings({**stack["settings"], "CREDENTIAL_MODE": "dev_password"}))
    out = io.StringIO()
    try:
        status = await run(services, SCHEDULER, out)
    finally:
        await services.aclose()
    lines = out.getvalue().splitlines()
    assert status == 0, out.getvalue()
    assert [line.split(":")[0] for line in lines] == [
        "ok   create event", "ok   resolve meeting", "ok   virtual-appointment link", "ok   move event",
        "ok   link after move", "ok   cancel event", "ok   meeting after cancel"]
    assert "join URL held" in out.getvalue() and "same link" in out.getvalue()
