"""The README keeps up with the code: every setting explained, every make target it names exists."""

import re
from pathlib import Path

import pytest

from shared.settings import SETTINGS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_explained_in_the_readme():
    missing = [spec.name for spec in SETTINGS if f"| `{spec.name}` |" not in README]
    assert not missing, f"README settings table lacks {missing}: regenerate it with tools/settings_table.py"


def test_make_targets_named_in_the_readme_exist():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = set(re.findall(r"`make ([a-z-]+)`", README)) | set(re.findall(r"^make ([a-z-]+)", README, re.MULTILINE))
    assert named and named <= targets, f"README names make targets that do not exist: {named - targets}"
