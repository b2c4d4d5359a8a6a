"""The organizer's connect flow in a real headless Chromium, as a person would do it, on the local stack; and
every page the app shows people (connect results, admin consent, the operator page), each screenshot checked:
its stylesheet applied (allowed by its hash under the CSP), readable at a phone's width.

Chromium is Debian's (`make test` installs it); Playwright drives it through `executable_path`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
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
FABRIKAM = "3f9a7c21-6b4d-4e8a-a1c5-9d2e8f7b6a40"
NORTHWIND = "b2c4e6a8-0d1f-4a3b-8c5e-7f9a1b3d5e60"
# The look (shared/pages/look.py): the header band's colour, the page's, a connected organizer's badge.
HEADER, BACKGROUND, CONNECTED_BADGE = (0x4F, 0x52, 0xB2), (0xFA, 0xF9, 0xF8), (0xDF, 0xF6, 0xDD)
PHONE = {"width": 390, "height": 844}


def _close(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


async def screenshot(page: Any, path: Path, *, width: int) -> Any:
    """Take the page's screenshot and check it shows the app's look: the stylesheet applied (the CSP let the
    hashed stylesheet through), no horizontal scrolling at this width. Returns the image."""
    from PIL import Image

    await page.screenshot(path=str(path), full_page=True)
    image = Image.open(path).convert("RGB")
    assert image.width == width, (path.name, image.size)
    assert _close(image.getpixel((width // 2, 4)), HEADER), f"{path.name}: no header band, stylesheet blocked?"
    assert _close(image.getpixel((2, image.height - 2)), BACKGROUND), f"{path.name}: page colour"
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
        f"{path.name}: wider than the screen"
    return image


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
    await screenshot(page, tmp_path / "connected.png", width=1280)
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


@pytest.fixture
def entra_admin(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    """The Entra emulator's admin API; Fabrikam has not consented to the app before or after the test."""
    import ssl

    verify = ssl.create_default_context(cafile=stack["ca_bundle"])
    with httpx.Client(base_url=stack["entra"]["admin_url"] + "/", verify=verify, timeout=10) as client:
        body = {"tenant": FABRIKAM, "client_id": stack["client"]["client_id"]}
        client.request("DELETE", "consent", json=body)
        yield client
        client.request("DELETE", "consent", json=body)


async def _entra_sign_in(page: Any, user: str) -> None:
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#accept")


async def test_every_page_in_chromium_admin_consent_a_second_tenant_a_refused_one_and_the_operator_page(
        chromium, host, vault_services, entra_admin, tmp_path):
    base = host.http_base_url.replace("127.0.0.1", "localhost")
    key = "local-dev-function-key"
    context = await chromium.new_context(ignore_https_errors=True)
    page = await context.new_page()
    # GIVEN Fabrikam's administrator, who opens the admin-consent link the operator sent
    await page.goto(f"{base}/api/auth/admin-consent?tenant={FABRIKAM}&code={key}")
    assert "Fabrikam Clinics" in await page.content()
    await _entra_sign_in(page, "admin@fabrikam.test")
    await page.wait_for_url(f"{base}/api/auth/callback*")
    # THEN the app says consent was granted for the organization
    assert "Admin consent granted" in await page.inner_text("h1")
    await screenshot(page, tmp_path / "admin-consent-granted.png", width=1280)
    # WHEN Fabrikam's organizer connects, signing in through `organizations`
    await page.goto(f"{base}/api/auth/connect?organizer=scheduler@fabrikam.test&code={key}")
    await _entra_sign_in(page, "scheduler@fabrikam.test")
    await page.wait_for_url(f"{base}/api/auth/callback*")
    assert "Fabrikam scheduling account" in await page.inner_text("#message")
    await screenshot(page, tmp_path / "connected-fabrikam.png", width=1280)
    assert vault_services.vault.get("scheduler@fabrikam.test").tenant_id == FABRIKAM
    # AND Northwind's organizer (a tenant off the list) tries, and is refused with a page that says why
    await page.goto(f"{base}/api/auth/connect?organizer=scheduler@northwind.test&code={key}")
    await _entra_sign_in(page, "scheduler@northwind.test")
    await page.wait_for_url(f"{base}/api/auth/callback*")
    assert "not served by this app" in await page.inner_text("h1") and NORTHWIND in await page.inner_text("#message")
    await screenshot(page, tmp_path / "refused-tenant.png", width=1280)
    await context.close()
    # AND the operator page lists the organizer with tenant and status, at a desktop's width and a phone's
    for name, viewport in (("desktop", {"width": 1280, "height": 800}), ("phone", PHONE)):
        context = await chromium.new_context(viewport=viewport)
        page = await context.new_page()
        await page.goto(f"{base}/api/manage/organizers?code={key}")
        assert FABRIKAM in await page.inner_text("#organizers") and "connected" in await page.inner_text("#organizers")
        image = await screenshot(page, tmp_path / f"operator-{name}.png", width=viewport["width"])
        colours = image.getcolors(image.width * image.height) or []
        assert any(_close(colour, CONNECTED_BADGE) for _, colour in colours), f"{name}: no status badge"
        await context.close()
