"""Process entry: Entra and Graph emulators over HTTPS in one aiohttp event loop on two ports."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from devstack.certs import ensure_app_credential, ensure_certs, public_certificate
from devstack.entra import ENTRA_KEY, create_entra_app
from devstack.graph import create_graph_app
from devstack.receiver import create_receiver_app, default_secrets

log = logging.getLogger("devstack.emulators")

SEED_DIR = Path(__file__).resolve().parent / "seed"


def load_seed(seed_dir: Path = SEED_DIR) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read directory.json and meetings.json."""
    directory = json.loads((seed_dir / "directory.json").read_text())
    meetings = json.loads((seed_dir / "meetings.json").read_text())
    return directory, meetings


def build_apps(directory: dict[str, Any], meetings: list[dict[str, Any]], host: str, entra_port: int,
               ca_pem: Path | str | None = None) -> tuple[web.Application, web.Application]:
    """Create both apps; Graph is handed Entra's JWKS in-process instead of fetching it."""
    entra_app = create_entra_app(directory, f"https://{host}:{entra_port}")
    emu = entra_app[ENTRA_KEY]
    graph_app = create_graph_app(meetings, directory, emu.jwks(), emu.base, ca_pem)
    return entra_app, graph_app


async def serve(state_dir: Path, host: str, entra_port: int, graph_port: int, seed_dir: Path,
                receiver_port: int = 5445) -> None:
    """Serve both emulators and the webhook receiver until SIGTERM or SIGINT."""
    certs = ensure_certs(state_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert_pem, certs.server_key_pem)
    directory, meetings = load_seed(seed_dir)
    # The app registration's certificate credential: its private key stays with the app (the stack's settings).
    app_certificate = public_certificate(ensure_app_credential(state_dir).read_text())
    directory["clients"][0] = {**directory["clients"][0],
                               "certificates": [*directory["clients"][0].get("certificates", []), app_certificate]}
    entra_app, graph_app = build_apps(directory, meetings, host, entra_port, certs.ca_pem)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    runners = []
    try:
        receiver_app = create_receiver_app(default_secrets())
        for app, port in ((entra_app, entra_port), (graph_app, graph_port), (receiver_app, receiver_port)):
            # handler_cancellation: a client that gives up on a "hang" fault frees its handler at once.
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port, ssl_context=ctx, backlog=1024).start()
        log.info("entra on https://%s:%d, graph on https://%s:%d/v1.0, webhook receiver on https://%s:%d/webhooks",
                 host, entra_port, host, graph_port, host, receiver_port)
        await stop.wait()
        log.info("shutting down")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the emulators."""
    parser = argparse.ArgumentParser(prog="python -m devstack.emulators", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--entra-port", type=int, default=5443)
    parser.add_argument("--graph-port", type=int, default=5444)
    parser.add_argument("--receiver-port", type=int, default=5445)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed-dir", type=Path, default=SEED_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.state_dir, args.host, args.entra_port, args.graph_port, args.seed_dir,
                      args.receiver_port))


if __name__ == "__main__":
    main()
