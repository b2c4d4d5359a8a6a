"""The sample settings (local.settings.sample.json) as tests load them: files resolved, no CA bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def sample_env(**overrides: str) -> dict[str, str]:
    """The sample's values, DEV_USERS_FILE made absolute and TLS_CA_BUNDLE left out, with overrides."""
    values: dict[str, Any] = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    return {**{k: str(v) for k, v in values.items()}, **overrides}
