"""Calendar-sync settings are validated (and only needed in calendar mode); the operator page shows each organizer's
Outlook-changes state."""

from __future__ import annotations

import pytest

from shared.calendar_sync.keeper import organizer_key
from shared.exceptions import SettingsError
from shared.identity.vault import VaultEntry
from shared.pages.organizers import render
from shared.settings import load_settings
from tests.sample_settings import sample_env

TENANT = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"


def test_the_notification_url_defaults_to_the_sites_host_name_in_calendar_mode_only():
    calendar = load_settings(sample_env(MEETING_KIND="calendar", GRAPH_NOTIFICATION_BASE_URL="",
                                        WEBSITE_HOSTNAME="va-links.azurewebsites.net"))
    assert calendar.graph_notification_base_url == "https://va-links.azurewebsites.net/api"
    assert load_settings(sample_env()).graph_notification_base_url is None  # standalone: not used
    given = load_settings(sample_env(MEETING_KIND="calendar", GRAPH_NOTIFICATION_BASE_URL="https://links.example/api/"))
    assert given.graph_notification_base_url == "https://links.example/api"


@pytest.mark.parametrize("name, value", [("GRAPH_NOTIFICATION_BASE_URL", "http://links.example/api"),
                                         ("GRAPH_SUBSCRIPTION_MINUTES", "10081"),
                                         ("GRAPH_SUBSCRIPTION_MINUTES", "30"),
                                         ("CALENDAR_SYNC_SCHEDULE", "*/5 * * * *"),
                                         ("CALENDAR_RESYNC_HOURS", "0")])
def test_a_bad_calendar_sync_setting_is_named(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings(sample_env(MEETING_KIND="calendar", **{name: value}))


def test_the_operator_page_says_whether_outlook_changes_are_followed():
    settings = load_settings(sample_env())
    entries = [VaultEntry(oid="aaaaaaaa-0000-0000-0000-000000000001", upn="a@contoso.example", display_name="A",
                          cache="", tenant_id=TENANT),
               VaultEntry(oid="aaaaaaaa-0000-0000-0000-000000000002", upn="b@contoso.example", display_name="B",
                          cache="", tenant_id=TENANT)]
    page = render(settings, entries, None, None, {organizer_key(entries[0].identity): "subscription_limit"})
    assert "Outlook changes: subscription_limit" in page and "Outlook changes: not subscribed yet" in page
    assert "Outlook changes" not in render(settings, entries, None, None)
