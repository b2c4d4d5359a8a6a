"""Crash recovery is tunable, and cannot be tuned into double work: the stale-claim settings."""

import json
from pathlib import Path

import pytest

from chaos.runner import APP_SETTINGS, CRASH_SETTINGS
from shared.exceptions import SettingsError
from shared.settings import load_settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def sample(**overrides: str) -> dict[str, str]:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values.pop("TLS_CA_BUNDLE")
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    return values | overrides


def test_production_defaults_take_over_a_dead_workers_claim_after_minutes():
    settings = load_settings({k: v for k, v in sample().items()
                              if k not in ("IDEMPOTENCY_STALE_CLAIM_SECONDS", "WEBHOOK_STALE_CLAIM_SECONDS")})
    assert settings.idempotency_stale_claim_seconds == 300 and settings.webhook_stale_claim_seconds == 120


def test_the_chaos_runs_settings_are_valid():
    settings = load_settings(sample(**APP_SETTINGS))
    assert settings.idempotency_stale_claim_seconds == 60 and settings.graph_timeout_seconds == 2
    assert load_settings(sample(**(APP_SETTINGS | CRASH_SETTINGS))).webhook_stale_claim_seconds == 30


@pytest.mark.parametrize(("name", "value", "names"), [
    ("IDEMPOTENCY_STALE_CLAIM_SECONDS", "15", "4 x GRAPH_TIMEOUT_SECONDS"),
    ("WEBHOOK_STALE_CLAIM_SECONDS", "12", "WEBHOOK_CONNECT_TIMEOUT_SECONDS + WEBHOOK_READ_TIMEOUT_SECONDS"),
])
def test_a_claim_shorter_than_an_invocation_is_refused(name, value, names):
    # A live worker's claim would be taken over while it still works: Graph called twice, a webhook sent twice.
    with pytest.raises(SettingsError, match=names.replace("+", r"\+")):
        load_settings(sample(**{name: value}))
