"""A private Azurite (queues and tables) on free ports, for tests that need real storage semantics."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's well-known development account key; public by design.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


@contextlib.contextmanager
def running_azurite() -> Iterator[str]:
    """Start Azurite in memory; yield a connection string with blob, queue and table endpoints; stop it."""
    if not AZURITE.exists():
        pytest.skip("azurite is not installed under node_modules")
    blob_port, queue_port, table_port = _free_ports(3)
    proc = subprocess.Popen(
        [str(AZURITE), "--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
         "--loose", "--blobHost", "127.0.0.1", "--blobPort", str(blob_port), "--queueHost", "127.0.0.1",
         "--queuePort", str(queue_port), "--tableHost", "127.0.0.1", "--tablePort", str(table_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        for port in (blob_port, queue_port, table_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        pytest.fail("azurite did not start: " + proc.communicate()[1].decode(errors="replace"))
                    time.sleep(0.1)
        yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1;"
               f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
               f"TableEndpoint=http://127.0.0.1:{table_port}/devstoreaccount1;")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
