"""Functional tests import the real function_app with the sample settings and swap in fakes."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sample_env() -> dict[str, str]:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    return values


for _key, _value in _sample_env().items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def function_app_module():
    import function_app

    return function_app


@pytest.fixture(scope="session")
def indexed(function_app_module):
    """The app's functions, indexed once (the library allows get_functions() once per app)."""
    from devstack.harness import index_functions

    return {f.get_function_name(): f for f in index_functions(function_app_module.app)}
