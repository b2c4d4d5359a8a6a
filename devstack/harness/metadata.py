"""`python -m devstack.harness.metadata [function_app.py]`: what Azure's Python worker tells the host about an app.

Runs worker init and FunctionsMetadataRequest in a fresh process, as the host does at start-up, and prints
each function's raw bindings as JSON. Exit status 1, with the worker's own message, when the worker refuses
the app (a deployed app would then show no functions at all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from devstack.harness.worker import Worker, WorkerError


async def describe(script: Path) -> list[dict[str, object]]:
    """Each function the worker indexed: its name and raw bindings, in the worker's order."""
    worker = await Worker.for_script(script)
    return [{"name": meta.name, "bindings": list(meta.bindings)} for meta in worker.functions.values()]


def main(argv: list[str] | None = None) -> int:
    """Print the worker's function metadata for a script; 1 when the worker refuses it."""
    parser = argparse.ArgumentParser(prog="python -m devstack.harness.metadata", description=main.__doc__)
    parser.add_argument("script", nargs="?", default="function_app.py", type=Path)
    args = parser.parse_args(argv)
    try:
        functions = asyncio.run(describe(args.script))
    except WorkerError as exc:
        print(exc, file=sys.stderr)
        return 1
    json.dump(functions, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
