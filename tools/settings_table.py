"""Print the README's settings table from the registry in shared/settings_registry.py (the one source of truth)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.settings import SETTINGS


def main() -> None:
    """Markdown table: name, required/default, meaning."""
    print("| Setting | Required / default | What it does |")
    print("|---|---|---|")
    for spec in SETTINGS:
        need = "**required**" if spec.required else (f"`{spec.default}`" if spec.default else "optional")
        if spec.dev_only:
            need += " (local only)"
        if spec.secret:
            need += ", secret"
        print(f"| `{spec.name}` | {need} | {spec.description} |")


if __name__ == "__main__":
    main()
