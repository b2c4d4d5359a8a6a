"""The deployment package as `azd deploy` / `func azure functionapp publish` build it: the project folder minus
what .funcignore names (gitignore syntax), zipped. The Flex Consumption remote build installs requirements.txt
on the server, so the package holds the app's own files only."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from bench.common import REPO_ROOT


def package_files(root: Path = REPO_ROOT) -> list[str]:
    """Every file the package would hold, relative to root, sorted (the whole tree, untracked files included,
    as a local `azd deploy` sees it; .funcignore decides)."""
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text().splitlines())
    kept: list[str] = []
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        # An ignored folder is not walked (node_modules, .venv): its files would be ignored anyway.
        dirs[:] = [d for d in dirs if d != ".git" and not spec.match_file(f"{(rel_folder / d).as_posix()}/")]
        for name in files:
            rel = (rel_folder / name).as_posix()
            if not spec.match_file(rel):
                kept.append(rel)
    return sorted(kept)


def build_package(destination: Path, root: Path = REPO_ROOT) -> Path:
    """Zip the package (deflated, as the deploy tools upload it); the zip's path."""
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel in package_files(root):
            archive.write(root / rel, rel)
    return destination
