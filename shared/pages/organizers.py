"""The operator page: every organizer's connection (tenant, status, scopes, last refresh, failures; with
MEETING_KIND=calendar, whether their Outlook changes are followed), a connect link for a new organizer, a
reconnect link beside each lapsed one, and an admin-consent link per tenant.

Served at /api/manage/organizers with a function key: the Functions host refuses any route that begins with
`admin` ("The specified route conflicts with one or more built in routes"), `/api` prefix or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlencode

import azure.functions as func

from shared.calendar_sync.keeper import organizer_key
from shared.common.fields import optional_guid
from shared.exceptions import InvalidEventError, JoinLinkError
from shared.identity.vault import ConnectionStatus, TokenVault, VaultEntry
from shared.pages.connect import ADMIN_CONSENT_ROUTE, CONNECT_ROUTE
from shared.pages.look import esc, html_page, message_page
from shared.settings import Settings

log = logging.getLogger(__name__)
ORGANIZERS_ROUTE = "manage/organizers"
_STATUS_TEXT: dict[str, str] = {
    ConnectionStatus.CONNECTED: "connected",
    ConnectionStatus.NEEDS_RECONNECT: "needs reconnect",
    ConnectionStatus.REVOKED: "revoked",
}


def _link(route: str, key: str | None, **params: str) -> str:
    """A link to another of the app's pages, carrying the function key this page was opened with, if any."""
    query = {k: v for k, v in params.items() if v} | ({"code": key} if key else {})
    return f"/api/{route}" + (f"?{urlencode(query)}" if query else "")


def _row(entry: VaultEntry, key: str | None, calendar: Mapping[str, str] | None = None) -> str:
    status = str(entry.status)
    lapsed = status != ConnectionStatus.CONNECTED
    reconnect = _link(CONNECT_ROUTE, key, organizer=entry.upn, tenant=entry.tenant_id)
    reconnect = _link(CONNECT_ROUTE, key, organizer=entry.upn, tenant=entry.tenant_id)
    action = (f"<a class=\"button\" href=\"{esc(reconnect)}\">Reconnect</a>" if lapsed
              else "<span class=\"muted\">–</span>")
    failures = f"{entry.consecutive_failures}" + (f" <span class=\"muted\">({esc((entry.last_error or '')[:120])})"
                                                   f"</span>" if entry.consecutive_failures else "")
    return ("<tr>"
            f"<td data-label=\"Organizer\"><strong>{esc(entry.display_name)}</strong><br>"
            f"<span class=\"muted\">{esc(entry.upn)}</span><br>"
            f"<span class=\"muted\">organizer_hash <code>{esc(entry.organizer_hash)}</code></span></td>"
            f"<td data-label=\"Tenant\"><code>{esc(entry.tenant_id or '-')}</code></td>"
            f"<td data-label=\"Status\"><span class=\"status {esc(status)}\">"
            f"{esc(_STATUS_TEXT.get(status, status))}</span>{_calendar_state(entry, calendar)}</td>"
            f"<td data-label=\"Scopes\">{esc(entry.scopes or '-')}</td>"
            f"<td data-label=\"Last refresh\">{esc(entry.last_refreshed_at or '-')}</td>"
            f"<td data-label=\"Failures\">{failures}</td>"
            f"<td data-label=\"Action\">{action}</td></tr>")


def _calendar_state(entry: VaultEntry, calendar: Mapping[str, str] | None) -> str:
    """MEETING_KIND=calendar: whether the organizer's Outlook changes are followed (their subscription's state)."""
    if calendar is None:
        return ""
    state = calendar.get(organizer_key(entry.identity), "not subscribed yet")
    return f"<br><span class=\"muted\">Outlook changes: {esc(state)}</span>"


def render(settings: Settings, entries: list[VaultEntry], key: str | None, tenant: str | None,
           calendar: Mapping[str, str] | None = None) -> str:
    """The page body (escaped); `calendar`: each organizer's subscription state by organizer key."""
    counts = Counter(str(e.status) for e in entries)
    mode = (f"multi-tenant, {len(settings.allowed_tenants)} tenant(s) allowed" if settings.is_multi_tenant
            else "single tenant")
    summary = "".join(f"<div><strong>{counts.get(status, 0)}</strong>{esc(text)}</div>"
                      for status, text in _STATUS_TEXT.items())
    rows = "".join(_row(e, key, calendar) for e in entries) or (
        "<tr><td colspan=\"7\">No organizer is connected yet.</td></tr>")
    tenants = "".join(
        f"<tr><td data-label=\"Tenant\"><code>{esc(t)}</code></td>"
        f"<td data-label=\"Organizers\">{sum(1 for e in entries if e.tenant_id == t) if tenant in (None, t) else '…'}"
        f"</td><td data-label=\"Links\"><a class=\"button quiet\" href=\"{esc(_link(CONNECT_ROUTE, key, tenant=t))}\">"
        f"Connect an organizer</a><a class=\"button quiet\" href=\"{esc(_link(ADMIN_CONSENT_ROUTE, key, tenant=t))}\">"
        f"Admin consent</a></td></tr>"
        for t in settings.allowed_tenants)
    shown = f" of tenant <code>{esc(tenant)}</code>" if tenant else ""
    return (f"<h1>Organizer connections</h1>"
            f"<p class=\"muted\">Tenancy: {esc(mode)}. Each organizer connects once; the app refreshes their "
            f"delegated access and shows here whoever needs a person to reconnect.</p>"
            f"<p><a class=\"button\" id=\"connect\" href=\"{esc(_link(CONNECT_ROUTE, key))}\">Connect an organizer</a>"
            f"</p><div class=\"summary\" id=\"summary\">{summary}</div>"
            f"<h2>Organizers{shown}</h2><table id=\"organizers\"><thead><tr><th>Organizer</th><th>Tenant</th>"
            f"<th>Status</th><th>Scopes</th><th>Last refresh</th><th>Failures</th><th>Action</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            f"<h2>Tenants</h2><p class=\"muted\">A tenant's administrator opens its admin-consent link once, so its "
            f"organizers are not asked to consent one by one.</p><table id=\"tenants\"><thead><tr><th>Tenant</th>"
            f"<th>Organizers</th><th>Links</th></tr></thead><tbody>{tenants}</tbody></table>"
            f"<p class=\"muted\">Links carry the key this page was opened with. Send organizers and administrators "
            f"links made with the connect and admin-consent functions' own keys instead.</p>")


async def organizers_page(req: func.HttpRequest, settings: Settings, vault: TokenVault,
                          calendar_states: Callable[[], Awaitable[dict[str, str] | None]] | None = None
                          ) -> func.HttpResponse:
    """GET [?tenant=<id>] → the operator page (with `calendar_states`: each organizer's Outlook-changes state)."""
    try:
        tenant = optional_guid({"tenant": req.params.get("tenant")}, "tenant")
    except InvalidEventError as exc:
        return message_page(400, "Invalid link", exc.detail)
    try:
        entries = await asyncio.to_thread(lambda: sorted(vault.entries(tenant), key=lambda e: (e.tenant_id,
                                                                                             e.upn.lower())))
    except JoinLinkError as exc:
        log.warning("operator page: vault unavailable (%s)", exc.reason, extra={"reason": exc.reason})
        return message_page(503, "Connections unavailable", "The token vault is unavailable. Reload the page in a "
                            "few minutes.")
    calendar = None
    if calendar_states is not None:
        try:
            calendar = await calendar_states()
        except JoinLinkError as exc:  # the page still shows the connections
            log.warning("operator page: subscription states unavailable (%s)", exc.reason)
    key = (req.params.get("code") or "").strip() or None
    return html_page(200, "Organizer connections", render(settings, entries, key, tenant, calendar))
