"""`make run`: start the local stack if needed and run the app on it until Ctrl-C."""

from __future__ import annotations

import argparse
from pathlib import Path

from devstack import harness
from devstack.stack import stack_health, start_stack, stop_stack


def _already_up(state_dir: Path) -> bool:
    try:
        from devstack.stack import load_endpoints

        return all(stack_health(load_endpoints(state_dir)).values())
    except Exception:
        return False


def main(argv: list[str] | None = None) -> None:
    """Start what is missing, run the harness in the foreground, stop what this command started."""
    parser = argparse.ArgumentParser(prog="python -m devstack.run", description=__doc__)
    parser.add_argument("--state-dir", default=".devstack", type=Path)
    parser.add_argument("--http-port", default="7071")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running on exit")
    args = parser.parse_args(argv)
    started_here = not _already_up(args.state_dir)
    endpoints = start_stack(args.state_dir)
    print(f"local stack up (state in {endpoints['state_dir']}); HTTP twin on http://127.0.0.1:{args.http_port}/api/")
    print(f"connect an organizer (CREDENTIAL_MODE=vault): open http://localhost:{args.http_port}/api/auth/connect"
          "?code=local-dev-function-key and sign in as scheduler@contoso.test / Local-Dev-Passw0rd!")
    print("send appointments with `make demo` in another terminal; Ctrl-C stops the app")
    try:
        harness.main(["--state-dir", str(args.state_dir), "--http-port", args.http_port])
    finally:
        if started_here and not args.keep_stack:
            stop_stack(args.state_dir)
            print("local stack stopped")


if __name__ == "__main__":
    main()
