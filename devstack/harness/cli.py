"""`python -m devstack.harness`: run the function app against the devstack until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path

from devstack.harness.host import RECEIVE_VISIBILITY_SECONDS, LocalHost

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")


def _script(spec: str) -> Path:
    # The worker imports the script itself, as in Azure: name it, don't import it here.
    path = Path(spec if spec.endswith(".py") else f"{spec}.py")
    return (path if path.is_absolute() else Path(os.getcwd()) / path).resolve()


async def _serve(host: LocalHost) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with host:
        if host.http_base_url:
            log.info("HTTP functions at %s/%s/", host.http_base_url, host.route_prefix)
        await stop.wait()
        log.info("stopping")


def main(argv: list[str] | None = None) -> None:
    """Run the function app against the devstack until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devstack.harness", description=main.__doc__)
    parser.add_argument("--state-dir", type=Path, default=Path(".devstack"))
    parser.add_argument("--http-port", type=int, default=7071, help="0 picks a free port; -1 disables HTTP")
    parser.add_argument("--function-app", default="function_app.py",
                        help="the function-app script the worker indexes (default %(default)s)")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--max-polling-cap", type=float, default=1.0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--host-json", type=Path, help="host.json to read instead of the app's own")
    parser.add_argument("--lease-seconds", type=int, default=RECEIVE_VISIBILITY_SECONDS,
                        help="visibility lease taken on each received message and renewed at half its length "
                             "while the invocation runs: how long a crashed harness's in-flight messages stay "
                             "hidden (default %(default)s, the host's 10 minutes)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The storage SDK logs every request at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)

    state = json.loads((args.state_dir / "endpoints.json").read_text(encoding="utf-8"))
    for key, value in (state.get("settings") or {}).items():
        os.environ.setdefault(key, str(value))
    connection_string = os.environ.get("AzureWebJobsStorage") or state["azurite"]["connection_string"]
    script = _script(args.function_app)
    host_json = script.parent / "host.json"
    host = LocalHost(
        script,
        connection_string=connection_string,
        host_json=args.host_json or host_json,
        http_port=None if args.http_port < 0 else args.http_port,
        poll_interval=args.poll_interval,
        max_polling_cap=args.max_polling_cap,
        lease_seconds=args.lease_seconds,
    )
    asyncio.run(_serve(host))
