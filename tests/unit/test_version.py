"""One version: shared/version.py, followed by pyproject.toml, azure.yaml, the contracts and the changelog."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from shared.http_twin.openapi import openapi_document
from shared.version import VERSION

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_semantic():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_pyproject_follows_the_version():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == VERSION


def test_azure_yaml_follows_the_version():
    template = yaml.safe_load((ROOT / "azure.yaml").read_text())["metadata"]["template"]
    assert template == f"va-join-links@{VERSION}"


def test_the_contracts_follow_the_version():
    assert yaml.safe_load((ROOT / "contracts" / "asyncapi.yaml").read_text())["info"]["version"] == VERSION
    assert json.loads(openapi_document())["info"]["version"] == VERSION


def test_the_changelog_has_the_version():
    # Keep a Changelog: the newest release heading right under Unreleased is this version.
    releases = re.findall(
        r"^## (\d+\.\d+\.\d+) - \d{4}-\d{2}-\d{2}$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE
    )
    assert releases and releases[0] == VERSION
