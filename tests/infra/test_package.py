"""The deployment package holds the app and nothing else: built as the deploy builds it, then listed."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from bench.deploy_package import build_package, package_files

pytestmark = pytest.mark.infra
REPO = Path(__file__).resolve().parents[2]
# What the app needs at run time: the entry point, the host's configuration, its requirements, the package,
# and the JSON Schemas shared/contracts.py reads.
APP = {"function_app.py", "host.json", "requirements.txt", "shared", "contracts"}


def test_the_package_is_the_app_only(tmp_path: Path) -> None:
    archive = build_package(tmp_path / "package.zip")
    with zipfile.ZipFile(archive) as package:
        names = package.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == APP, f"not the app: {sorted(tops - APP)}; missing: {sorted(APP - tops)}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert all(n.startswith("contracts/schemas/") for n in names if n.startswith("contracts/"))
    # Every module of the app and every schema it reads is in it
    for path in [*REPO.glob("shared/**/*.py"), *REPO.glob("contracts/schemas/*.json")]:
        rel = path.relative_to(REPO).as_posix()
        assert rel in names or rel.startswith(("shared/testing/", "shared/__pycache__")) or "__pycache__" in rel, rel
    assert not [n for n in names if n.startswith("shared/testing/")]


def test_local_tool_folders_would_be_left_out(tmp_path: Path) -> None:
    # A local `azd deploy` sees untracked folders too: virtual environments, caches, the local stack's state.
    for folder in (".venv-infra", ".devstack", ".hypothesis", "node_modules/x", "bench", "chaos", "tools"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "f.py").write_text("")
    for name in ("function_app.py", "host.json", "requirements.txt", ".funcignore"):
        (tmp_path / name).write_text((REPO / name).read_text())
    assert package_files(tmp_path) == ["function_app.py", "host.json", "requirements.txt"]
