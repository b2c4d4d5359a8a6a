"""Settings: validated at start-up, every problem named, app-only modes refused."""

import json
from pathlib import Path

import pytest

from shared.exceptions import SettingsError
from shared.settings import SETTINGS, load_settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def sample_env():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    return values


def test_sample_settings_are_valid_and_typed():
    settings = load_settings(sample_env())
    assert settings.is_development and settings.graph_timeout_seconds == 10.0
    assert settings.authority_url.endswith("/7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10")
    assert settings.storage.connection_string == "UseDevelopmentStorage=true"


def test_every_problem_is_named_at_once():
    env = sample_env() | {"GRAPH_TIMEOUT_SECONDS": "soon", "THROTTLE_MAX_REQUEUES": "-1"}
    del env["ENTRA_CLIENT_ID"]
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    text = str(caught.value)
    assert "GRAPH_TIMEOUT_SECONDS" in text and "THROTTLE_MAX_REQUEUES" in text and "ENTRA_CLIENT_ID" in text


@pytest.mark.parametrize("mode", ["managed_identity", "client_credentials", "client_secret"])
def test_app_only_credential_modes_are_refused_with_the_reason(mode):
    with pytest.raises(SettingsError) as caught:
        load_settings(sample_env() | {"CREDENTIAL_MODE": mode})
    assert "delegated permissions only" in str(caught.value)


def test_dev_credentials_are_refused_in_production():
    with pytest.raises(SettingsError, match="APP_ENVIRONMENT=development"):
        load_settings(sample_env() | {"APP_ENVIRONMENT": "production"})


def test_identity_based_storage_connection_is_accepted():
    env = sample_env()
    del env["AzureWebJobsStorage"]
    env |= {"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": "cid"}
    storage = load_settings(env).storage
    assert storage.queue_service_uri == "https://acct.queue.core.windows.net" and storage.client_id == "cid"


def test_sample_settings_cover_every_setting_the_code_reads():
    sample = set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])
    assert {spec.name for spec in SETTINGS} <= sample


@pytest.mark.parametrize("url", ["http://localhost.:5445/webhooks", "http://[::1]:5445/webhooks"])
def test_loopback_urls_follow_the_one_url_rule(url):
    # The settings copy of the rule refused "localhost." while the webhook sender accepted it: one rule now.
    assert load_settings(sample_env() | {"WEBHOOK_URL": url}).webhook_url == url
    with pytest.raises(SettingsError, match="WEBHOOK_URL"):
        load_settings(sample_env() | {"WEBHOOK_URL": url, "APP_ENVIRONMENT": "production"})


def test_an_unresolved_key_vault_reference_is_never_a_secret():
    # GIVEN App Service could not resolve the references (the intake's secret was never created)
    from shared.settings import load_settings
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "ENTRA_TENANT_ID": TENANT, "ENTRA_CLIENT_ID": "c",
            "ENTRA_APP_CREDENTIAL": "client_secret", "ENTRA_CLIENT_SECRET": "s",
            "WEBHOOK_SECRET": "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
            "AUTH_REDIRECT_URI": "https://app.example/api/auth/callback"}
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/calcom-webhook-secret)"
    settings = load_settings({**base, "CALCOM_WEBHOOK_SECRET": reference})
    # THEN the intake is off rather than keyed with the reference text
    assert settings.calcom_webhook_secret is None
    with pytest.raises(SettingsError, match="ENTRA_CLIENT_SECRET is a Key Vault reference"):
        load_settings({**base, "ENTRA_CLIENT_SECRET": reference})
# --- tenancy and the app's credential ---------------------------------------------------------------------

TENANT = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"
FABRIKAM = "3f9a7c21-6b4d-4e8a-a1c5-9d2e8f7b6a40"


def test_single_tenant_is_the_default_and_allows_its_own_tenant_only():
    env = sample_env() | {"ENTRA_ALLOWED_TENANTS": ""}
    del env["ENTRA_TENANCY"]
    settings = load_settings(env)
    assert settings.tenancy == "single" and settings.sign_in_tenant == TENANT
    assert settings.allowed_tenants == (TENANT,) and settings.tenant_allowed(TENANT.upper())
    assert not settings.tenant_allowed(FABRIKAM) and not settings.tenant_allowed(None)
    with pytest.raises(SettingsError, match="ENTRA_TENANCY=single"):
        load_settings(env | {"ENTRA_ALLOWED_TENANTS": FABRIKAM})


def test_multi_tenant_signs_in_at_organizations_and_needs_a_list():
    settings = load_settings(sample_env())
    assert settings.is_multi_tenant and settings.sign_in_tenant == "organizations"
    assert settings.allowed_tenants == (TENANT, FABRIKAM)
    with pytest.raises(SettingsError, match="ENTRA_ALLOWED_TENANTS is empty") as caught:
        load_settings(sample_env() | {"ENTRA_ALLOWED_TENANTS": ""})
    assert "not 'every tenant'" in str(caught.value)
    with pytest.raises(SettingsError, match="ENTRA_ALLOWED_TENANTS"):
        load_settings(sample_env() | {"ENTRA_ALLOWED_TENANTS": "contoso.onmicrosoft.com"})
    with pytest.raises(SettingsError, match="ENTRA_TENANT_ID"):
        load_settings(sample_env() | {"ENTRA_TENANT_ID": "contoso"})


@pytest.mark.parametrize(("kind", "needs"), [("client_secret", "ENTRA_CLIENT_SECRET"),
                                             ("certificate", "ENTRA_CLIENT_CERTIFICATE")])
def test_each_credential_kind_names_the_setting_it_needs(kind, needs):
    with pytest.raises(SettingsError, match=needs):
        load_settings(sample_env() | {"ENTRA_APP_CREDENTIAL": kind})


def test_federated_needs_no_secret_and_bad_values_are_named_without_being_shown():
    settings = load_settings(sample_env())
    assert settings.app_credential == "federated" and settings.client_secret == ""
    assert settings.managed_identity_client_id == "2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d"
    with pytest.raises(SettingsError) as caught:
        load_settings(sample_env() | {"ENTRA_APP_CREDENTIAL": "certificate",
                                      "ENTRA_CLIENT_CERTIFICATE": "-----BEGIN CERTIFICATE-----secret-bits"})
    assert "ENTRA_CLIENT_CERTIFICATE=<redacted>" in str(caught.value) and "secret-bits" not in str(caught.value)
    with pytest.raises(SettingsError, match="ENTRA_APP_CREDENTIAL"):
        load_settings(sample_env() | {"ENTRA_APP_CREDENTIAL": "managed_identity"})
def test_meeting_management_and_client_sms_are_off_by_default_and_validated():
    env = {k: v for k, v in sample_env().items()
           if k not in ("MEETING_MANAGEMENT", "CLIENT_SMS", "CLIENT_SMS_REMINDER", "APPOINTMENTS_TABLE")}
    settings = load_settings(env)
    assert (settings.meeting_management, settings.client_sms, settings.client_sms_reminder) == (False, False, None)
    assert settings.appointments_table == "appointments"
    with pytest.raises(SettingsError) as raised:
        load_settings(env | {"MEETING_MANAGEMENT": "sometimes", "CLIENT_SMS_REMINDER": "mins60",
                             "APPOINTMENTS_TABLE": "no-hyphens"})
    problems = "\n".join(raised.value.problems)
    assert "MEETING_MANAGEMENT" in problems and "CLIENT_SMS_REMINDER" in problems and "mins15" in problems
    assert "APPOINTMENTS_TABLE" in problems
