"""The organizer's connect flow in a real headless Chromium, as a person would do it, on the local stack.

Chromium is Debian's (`make test` installs it); Playwright drives it through `executable_path`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared import organizers, queues
from shared.identity.vault import ConnectionStatus
from shared.services import Services
from shared.settings import load_settings
from tests.e2e.conftest import read_all, send
from tests.e2e.test_pipeline import plain

pytestmark = [pytest.mark.e2e,
              pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ORGANIZER = "scheduler@contoso.test"
PASSWORD = "Local-Dev-Passw0rd!"
# Flags for a root, offline machine: no sandbox (root), no background calls to Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium; skipped where neither it nor Playwright is installed, unless BROWSER_REQUIRED=1."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None
    if async_playwright is None or not Path(CHROMIUM).exists():
        message = "headless Chromium is not installed (make test installs Debian's chromium and playwright)"
        if os.environ.get("BROWSER_REQUIRED", "") not in ("", "0"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def vault_services(app_module: Any, host: Any, stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                         ) -> AsyncIterator[Services]:
    """The app in vault mode, its redirect URI on this run's port (Entra ignores loopback ports)."""
    port = host.http_base_url.rsplit(":", 1)[1]
    values = {**stack["settings"], "CREDENTIAL_MODE": "vault",
              "TOKEN_VAULT_CONTAINER": f"vault-{uuid.uuid4().hex[:12]}",
              "AUTH_REDIRECT_URI": f"http://localhost:{port}/api/auth/callback"}
    services = Services(load_settings(values))
    monkeypatch.setattr(app_module, "services", services)
    yield services
    await services.aclose()


async def test_connect_in_chromium_then_events_resolve_then_revoke(chromium, host, vault_services, stack,
                                                                   queues_client, tmp_path):
    base = host.http_base_url.replace("127.0.0.1", "localhost")
    context = await chromium.new_context(ignore_https_errors=True)  # the emulator's locally made certificate
    page = await context.new_page()
    # GIVEN an organizer who opens the connect link an admin sent them
    await page.goto(f"{base}/api/auth/connect?organizer={ORGANIZER}&code=local-dev-function-key")
    # WHEN they sign in on the (emulated) Microsoft sign-in page and accept the requested permissions
    assert await page.input_value("#username") == ORGANIZER
    assert "VirtualAppointment.Read" in await page.content()
    await page.fill("#password", PASSWORD)
    await page.click("#accept")
    await page.wait_for_url(f"{base}/api/auth/callback*")
    # THEN the app's page says they are connected, and the vault holds their token cache
    text = await page.inner_text("body")
    await page.screenshot(path=str(tmp_path / "connected.png"))
    assert "Scheduling service account" in text
    assert vault_services.vault.get(ORGANIZER).status == ConnectionStatus.CONNECTED
    await context.close()
    # AND an appointment of theirs gets its join URL with no token configured by hand
    await send(queues_client, plain("browser-1", appointment_id="apt-browser", organizer=ORGANIZER))
    await host.drain(timeout=30)
    (result,) = [json.loads(t) for t in await read_all(queues_client, queues.JOIN_URLS)]
    assert result["eventId"] == "browser-1" and "meeting_cardiology" in result["joinUrl"]
    # AND once an operator revokes them, the next event is rejected on its first attempt, saying how to reconnect
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"Values": {
        **stack["settings"], "CREDENTIAL_MODE": "vault",
        "TOKEN_VAULT_CONTAINER": vault_services.settings.token_vault_container}}))
    assert organizers.main(["--settings", str(settings_file), "revoke", ORGANIZER]) == 0
    vault_services.credentials.invalidate(ORGANIZER)  # as on a fresh worker: no access token in memory
    await send(queues_client, plain("browser-2", appointment_id="apt-browser-2", organizer=ORGANIZER))
    await host.drain(timeout=30)
    (record,) = [json.loads(t) for t in await read_all(queues_client, queues.APPOINTMENTS_REJECTED)]
    assert record["reason"] == "organizer_not_connected" and record["dequeueCount"] == 1
    assert "/api/auth/connect" in record["detail"]
