"""Item 7: what a deployment weighs: the package `azd deploy` uploads (the app's files, .funcignore applied) plus
the runtime dependencies the remote build installs from requirements.txt (and everything they pull in)."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

from bench.common import REPO_ROOT, Figure, Report

TOP = 8


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def runtime_closure(requirements: Path = REPO_ROOT / "requirements.txt") -> dict[str, md.Distribution]:
    """Installed distributions reachable from requirements.txt (extras and environment markers honoured)."""
    from packaging.requirements import Requirement

    found: dict[str, md.Distribution] = {}
    pending = [(Requirement(line), frozenset(Requirement(line).extras)) for line in _requirements(requirements)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        req, extras = pending.pop()
        key = (_canonical(req.name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue
        found[_canonical(req.name)] = dist
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (extras or {""})):
                pending.append((sub, frozenset(sub.extras)))
    return found


def _size(dist: md.Distribution) -> tuple[int, int, int]:
    """(bytes, bytes on disk, files) of what pip installed for dist, compiled bytecode included."""
    total = disk = files = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            stat = path.stat()
            total += stat.st_size
            disk += stat.st_blocks * 512
            files += 1
    return total, disk, files


def measure(report: Report) -> None:
    """Sum what pip installed for the runtime closure and the deployment package; name the biggest."""
    import tempfile

    from bench.deploy_package import build_package, package_files

    app_files = package_files()
    app_bytes = sum((REPO_ROOT / rel).stat().st_size for rel in app_files)
    with tempfile.TemporaryDirectory() as scratch:
        zipped = build_package(Path(scratch) / "package.zip").stat().st_size
    closure = runtime_closure()
    sizes = {name: _size(dist) for name, dist in closure.items()}
    total = sum(size for size, _, _ in sizes.values())
    disk = sum(on_disk for _, on_disk, _ in sizes.values())
    files = sum(count for _, _, count in sizes.values())
    top = sorted(sizes.items(), key=lambda kv: kv[1][0], reverse=True)[:TOP]
    share = ", ".join(f"{name} {size / 2**20:.0f}" for name, (size, _, _) in top)
    report.add(Figure("deploy_size_mb", (total + app_bytes) / 2**20, "report", fmt="{:.0f}",
                      detail=f"package {len(app_files)} files, {app_bytes / 2**20:.2f} MB ({zipped / 2**20:.2f} MB "
                             f"zipped) + {len(closure)} distributions, {files} files, {disk / 2**20:.0f} MB on "
                             f"disk; largest (MB): {share}"))
    graph, graph_disk, graph_files = sizes.get("msgraph-sdk", (0, 0, 0))
    report.note(f"deploy size: msgraph-sdk is {graph / total:.0%} of the runtime install: {graph / 2**20:.0f} MB in "
                f"{graph_files} files ({graph_disk / 2**20:.0f} MB on disk) of {total / 2**20:.0f} MB")
