"""The fleet finds the process that holds a connection by its two ports (how a refresh kill finds its victim)."""

from __future__ import annotations

import os
import socket

import pytest

from chaos.fleet import socket_inode

pytestmark = pytest.mark.e2e


def test_a_connection_is_found_by_its_local_and_remote_ports():
    # GIVEN a loopback connection from this process
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with accepted:
            local, remote = client.getsockname()[1], server.getsockname()[1]
            # WHEN its inode is looked up by both ports
            inode = socket_inode(local, remote)
            # THEN it is the client's socket, held by this process; the wrong remote port finds nothing
            fds = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}")}
            assert inode is not None and f"socket:[{inode}]" in fds
            assert os.fstat(client.fileno()).st_ino == int(inode)
            assert socket_inode(local, remote + 1 if remote < 65535 else remote - 1) is None
