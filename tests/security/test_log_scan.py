"""The log scanner itself: it finds what must never be logged, and lets redacted forms through."""

import logging

import pytest

from shared.redaction import hash_user
from tests.log_scan import scan_records, scan_text

pytestmark = pytest.mark.unit
JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJvaWQiOiI0YzdlMWQyYSIsInNjcCI6IlZpcnR1YWxBcHBvaW50bWVudC5SZWFkIn0."
       "c2lnbmF0dXJlLWJ5dGVzLWhlcmU")
JOIN_URL = "https://visit.teams.microsoft.com/webrtc-svc/api/route?tid=7d0c&convId=19:meeting_x@thread.v2"
JOIN_WEB_URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_cardiology%40thread.v2/0"


def record(message, *args, name="shared.pipeline.processor", **extra):
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


@pytest.mark.parametrize(("text", "kind"), [
    (f"token {JWT}", "jwt"),
    ("secret whsec_bG9jYWwtZGV2LXdlYmhvb2stc2VjcmV0LW5vdC1mb3ItcHJvZHVjdGlvbg==", "webhook_secret"),
    (f"link {JOIN_URL}", "join_url"),
    (f"link {JOIN_WEB_URL}", "join_web_url"),
    ("client secret local-dev-secret-not-for-production used", "client_secret"),
    ("signing in with Local-Dev-Passw0rd!", "password"),
    ("refresh_token=0.AXkA-some-opaque-refresh-token", "credential_field"),
    ("GET /api/join-url?code=local-dev-function-key", "function_key"),
    ("credential -----BEGIN PRIVATE KEY-----\nMIIEv...", "private_key"),
    ("credential -----BEGIN RSA PRIVATE KEY-----\nMIIEv...", "private_key"),
    ("X-IDENTITY-HEADER: local-dev-identity-header", "identity_header"),
])
def test_each_kind_of_leak_is_found(text, kind):
    assert kind in {f.kind for f in scan_text(text, "test")}


@pytest.mark.parametrize("text", [
    f"organizer {hash_user('scheduler@contoso.test')} outcome=ready",
    "join url https://visit.teams.microsoft.com/… resolved",
    "WEBHOOK_SECRET must be one or two comma-separated whsec_<base64> secrets",
    "password grant refused: invalid_grant",
    "refresh_token=<redacted>",
    "webhook chaos7-000001_ready: outcome=delivered host=127.0.0.1",
    "https://teams.microsoft.com/…",
])
def test_redacted_and_harmless_text_is_not_a_finding(text):
    assert scan_text(text, "test") == []


def test_extra_fields_and_tracebacks_are_scanned_but_only_for_app_loggers():
    try:
        raise RuntimeError(f"Graph said {JOIN_URL}")
    except RuntimeError:
        import sys
        failing = record("lookup crashed", name="devstack.harness")
        failing.exc_info = sys.exc_info()
    in_extra = record("outcome=%s", "ready", join_url=JOIN_URL)
    third_party = record("Authorization: Bearer %s", JWT, name="msal.token_cache")
    findings = scan_records([failing, in_extra, third_party])
    assert {(f.kind, f.where.split()[0]) for f in findings} == {("join_url", "devstack.harness"),
                                                               ("join_url", "shared.pipeline.processor")}
    assert all(JOIN_URL not in f.excerpt for f in findings), "the report itself must not repeat the secret"
