"""How each kind of setting value is read and checked: the rules behind every SettingSpec.

A converter takes the raw text and returns the typed value or raises ValueError (the Reader turns that into
one problem naming the setting); checks that involve several settings live in settings.load_settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.common.ids import is_guid, is_upn
from shared.common.standard_webhooks import decode_secret
from shared.exceptions import WebhookSignatureError
from shared.settings_registry import SPECS_BY_NAME

_UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("


def unresolved_problem(name: str) -> str:
    """What to say about a Key Vault reference App Service left unresolved."""
    return (f"{name} is a Key Vault reference App Service could not resolve (check the secret exists and the app "
            "identity holds Key Vault Secrets User)")


class Reader:
    """Collects every problem before failing, so one start-up shows all bad settings at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []
        self.unresolved: set[str] = set()  # Key Vault references the platform left as text

    def raw(self, name: str) -> str:
        spec = SPECS_BY_NAME[name]
        value = self._env.get(name, "").strip()
        if value.startswith(_UNRESOLVED_REFERENCE):
            # App Service leaves a Key Vault reference it cannot resolve as literal text: never a secret's value.
            # An optional secret whose Key Vault entry does not exist (an intake not turned on) is unset.
            if spec.required:
                self.problems.append(unresolved_problem(name))
            self.unresolved.add(name)
            value = ""
        if not value and spec.name == "AzureWebJobsStorage":
            # Identity-based connections have no single value; the presence of any service URI counts.
            if any(k.startswith("AzureWebJobsStorage__") for k in self._env):
                return "identity"
        if not value:
            if spec.required:
                self.problems.append(f"{name} is missing: {spec.description}")
            return spec.default or ""
        return value

    def missing(self, name: str, why: str) -> None:
        """A setting some other setting needs is not set (or is an unresolved Key Vault reference)."""
        self.problems.append(unresolved_problem(name) if name in self.unresolved else f"{name} is missing: {why}")

    def parse(self, name: str, convert: Callable[[str], Any], rule: str) -> Any:
        value = self.raw(name)
        if not value:
            return None
        try:
            return convert(value)
        except (ValueError, TypeError):
            # A secret's value must not reach start-up errors and logs, even when it is malformed.
            shown = "<redacted>" if SPECS_BY_NAME[name].secret else repr(value)
            self.problems.append(f"{name}={shown} is invalid: {rule}")
            return None


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:  # NaN too
        raise ValueError(value)
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def https_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(value)
    return value.rstrip("/")


def container_name(value: str) -> str:
    # Blob container rules: 3-63 lowercase letters, digits and single hyphens, starting and ending alphanumeric.
    if not (3 <= len(value) <= 63 and value.isascii() and value.replace("-", "").isalnum() and value == value.lower()
            and value[0] != "-" and value[-1] != "-" and "--" not in value):
        raise ValueError(value)
    return value


def boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(value)
    return lowered in ("true", "1", "yes")


def subscription_minutes(value: str) -> int:
    # Graph's maximum for Outlook events is 10080 minutes; below 45 the timer could not renew in time.
    number = int(value)
    if not 45 <= number <= 10080:
        raise ValueError(value)
    return number


def ncrontab(value: str) -> str:
    # Six fields (seconds first) as the Functions host expects; the host itself checks the field values.
    if len(value.split()) != 6:
        raise ValueError(value)
    return value


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ValueError(value)
    return path


def webhook_secrets(value: str) -> tuple[str, ...]:

    secrets = tuple(part.strip() for part in value.split(",") if part.strip())
    if not 1 <= len(secrets) <= 2:
        raise ValueError(value)
    try:
        for secret in secrets:
            decode_secret(secret)
    except WebhookSignatureError as exc:
        raise ValueError(str(exc)) from None
    return secrets


def host_patterns(value: str) -> tuple[str, ...]:
    patterns = tuple(part.strip().lower().rstrip(".") for part in value.split(",") if part.strip())
    for pattern in patterns:
        name = pattern[2:] if pattern.startswith("*.") else pattern
        # A bare "*" or a wildcard in the middle would allow far more than anyone means to.
        if not name or "*" in name or "/" in name or ":" in name or " " in name:
            raise ValueError(pattern)
    return patterns


def organizer_map(value: str) -> dict[str, str]:
    doc = json.loads(value)
    if not isinstance(doc, dict):
        raise ValueError(value)
    entries: dict[str, str] = {}
    for key, target in doc.items():
        if not isinstance(target, str) or not (is_guid(target.strip()) or is_upn(target.strip())):
            raise ValueError(key)
        entries[key.strip().lower()] = target.strip()
    return entries


def domains(value: str) -> tuple[str, ...]:
    domains = tuple(part.strip().lower().lstrip("@") for part in value.split(",") if part.strip())
    for domain in domains:
        if "." not in domain or any(ch in domain for ch in " /\\@*:"):
            raise ValueError(domain)
    return domains


def table_name(value: str) -> str:
    if not (3 <= len(value) <= 63 and value[0].isalpha() and value.isalnum() and value.isascii()):
        raise ValueError(value)
    return value


def guid(value: str) -> str:
    if not is_guid(value):
        raise ValueError(value)
    return value.lower()


def tenant_list(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(guid(part.strip()) for part in value.split(",") if part.strip()))


def certificate(value: str) -> str:
    # Only the form is checked here (cheap at start-up); the key itself is read on first use.
    text = value.strip()
    if "-----BEGIN" in text:
        if "PRIVATE KEY-----" not in text or "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError("the PEM must hold the private key and the certificate")
        return text
    import base64
    import binascii

    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("neither PEM nor base64 PKCS#12") from None
    return text
