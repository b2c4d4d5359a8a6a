"""Fuzzing: the real function_app with the sample settings (as the functional tests), fakes behind it."""

import json
import os
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[2]

for _key, _value in json.loads((ROOT / "local.settings.sample.json").read_text())["Values"].items():
    if _key == "TLS_CA_BUNDLE":
        continue
    os.environ.setdefault(_key, str(ROOT / _value) if _key.endswith("_FILE") else _value)

# `make test` runs a bounded number of examples per property (HYPOTHESIS_PROFILE=long for a deeper run).
settings.register_profile("suite", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))
