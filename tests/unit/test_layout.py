"""The layout the map in shared/__init__.py describes, checked: sizes, empty package files, who speaks HTTP.

The import direction itself is `lint-imports` (contracts in pyproject.toml), run by `make lint`.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
HTTP_ADAPTERS = ("shared.http_twin", "shared.pages", "shared.intake", "shared.problems")
LIMITS = {"shared": 450, "devstack": 600}


@pytest.mark.parametrize(("folder", "limit"), LIMITS.items())
def test_no_module_is_too_long_to_read(folder: str, limit: int) -> None:
    too_long = {str(path.relative_to(ROOT)): n for path in (ROOT / folder).rglob("*.py")
                if (n := len(path.read_text().splitlines())) > limit}
    assert not too_long, f"split these along their seams (limit {limit} lines): {too_long}"


def test_package_files_import_nothing() -> None:
    # An import in a package's __init__ runs whenever anything below it is imported: cold start pays for it.
    for init in (ROOT / "shared").rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], init


def test_only_the_http_adapters_import_azure_functions() -> None:
    # Function-level imports count too: an HTTP response built deep in the pipeline is still the wrong place.
    offenders = set()
    for path in (ROOT / "shared").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imports |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if any(name == "azure.functions" or name.startswith("azure.functions.") for name in imports) \
                and not module.startswith(HTTP_ADAPTERS):
            offenders.add(module)
    assert not offenders, f"only {HTTP_ADAPTERS} may build HTTP responses: {sorted(offenders)}"


def map_entries(doc: str) -> dict[str, str]:
    """The map's entries: a package (`name/`) or module (`name.py`) starting a line, and its text up to the next."""
    entries: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        match = re.match(r"^\s*([a-z_]+/|[a-z_]+\.py)\s", line)
        if match:
            current = match.group(1)
            entries[current] = line[match.end():]
        elif current is not None:
            entries[current] += " " + line.strip()
    return entries


def missing_from_map(root: Path) -> list[str]:
    """Every package and module under `root`/shared that its map does not place (a module: by its name, as a
    word in its package's entry)."""
    shared = root / "shared"
    entries = map_entries(ast.get_docstring(ast.parse((shared / "__init__.py").read_text())) or "")
    missing = [p.name for p in shared.glob("*.py") if p.name != "__init__.py" and p.name not in entries]
    for package in sorted(p for p in shared.iterdir() if (p / "__init__.py").exists()):
        text = entries.get(package.name + "/")
        if text is None:
            missing.append(package.name + "/")
            continue
        missing += [f"{package.name}/{m.name}" for m in sorted(package.glob("*.py"))
                    if m.name != "__init__.py" and not re.search(rf"\b{m.stem}\b", text)]
    return missing


def test_the_map_names_every_package_and_module() -> None:
    missing = missing_from_map(ROOT)
    assert not missing, f"shared/__init__.py does not place {missing}"


def test_the_map_check_finds_an_unplaced_module(tmp_path: Path) -> None:
    (tmp_path / "shared" / "common").mkdir(parents=True)
    (tmp_path / "shared" / "common" / "__init__.py").write_text("")
    (tmp_path / "shared" / "common" / "clock.py").write_text("")
    (tmp_path / "shared" / "common" / "strict_json.py").write_text("")
    (tmp_path / "shared" / "queues.py").write_text("")
    (tmp_path / "shared" / "__init__.py").write_text('"""Map.\n\ncommon/  Timestamps (clock).\n"""\n')
    assert missing_from_map(tmp_path) == ["queues.py", "common/strict_json.py"]


def test_indexing_imports_no_sdk() -> None:
    # The host imports function_app.py at start-up: every SDK waits for the first invocation that needs it.
    code = ("import sys, function_app; heavy = ('msgraph', 'msal', 'azure.identity', 'azure.storage', "
            "'azure.monitor', 'jwt', 'aiohttp', 'httptools', 'kiota_abstractions'); "
            "print(sorted({m.split('.')[0] + '.' + m.split('.')[1] if m.startswith('azure.') else m.split('.')[0] "
            "for m in sys.modules if m.startswith(heavy)}))")
    env = {"PYTHONPATH": str(ROOT), **_sample_env()}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _sample_env() -> dict[str, str]:
    import json

    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    return {key: str(value) for key, value in values.items()}
