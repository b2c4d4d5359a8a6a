"""The app's instances in a chaos run: harness processes on one storage account, killed and restarted.

Each instance is `python -m devstack.harness` in its own session, as the Functions host would run the app on
its own machine, so `kill -9` takes one instance and nothing else. The fleet can tell which instance owns a
TCP connection (by its local port), which is how the runner finds the instance waiting on a held token
refresh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack.stack import REPO_ROOT


class Instance:
    """One harness process (and its successors after kills: one log file per start)."""

    def __init__(self, number: int, state_dir: Path, env: dict[str, str], host_json: Path, lease_seconds: int,
                 http_port: int = -1) -> None:
        self.number = number
        self.http_port = http_port  # -1: no HTTP (queues and timers only); kept across restarts
        self.state_dir = state_dir
        self.env = env
        self.host_json = host_json
        self.lease_seconds = lease_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        """Start a new process for this instance."""
        log_path = self.state_dir / f"harness-{self.number}-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "devstack.harness", "--state-dir", str(self.state_dir),
                 "--http-port", str(self.http_port), "--host-json", str(self.host_json),
                 "--lease-seconds", str(self.lease_seconds)],
                cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no chance to finish or settle anything in flight."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not finished its in-flight work within 40 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()

    def owns_socket(self, inode: str) -> bool:
        """Whether this process holds the socket with that inode."""
        if not self.alive():
            return False
        fd_dir = Path(f"/proc/{self.pid}/fd")
        target = f"socket:[{inode}]"
        try:
            for fd in fd_dir.iterdir():
                try:
                    if os.readlink(fd) == target:
                        return True
                except OSError:
                    continue
        except OSError:
            return False
        return False


def socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the TCP socket from ``local_port`` to ``remote_port`` (Linux /proc/net).

    Both ports are needed: an ephemeral port is reused for connections to other destinations, by any
    process on the machine.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == local_port
                    and int(fields[2].rsplit(":", 1)[1], 16) == remote_port):
                return fields[9]
    return None


class Fleet:
    """N instances of the app on one storage account."""

    def __init__(self, count: int, state_dir: Path, env: dict[str, str], host_json: Path, lease_seconds: int,
                 http_ports: list[int] | None = None) -> None:
        ports = http_ports or [-1] * count
        self.instances = [Instance(n + 1, state_dir, env, host_json, lease_seconds, ports[n]) for n in range(count)]

    def start(self) -> None:
        """Start every instance."""
        for instance in self.instances:
            instance.start()

    def stop(self) -> None:
        """Stop every instance, all at once (each finishes its in-flight work)."""
        for instance in self.instances:
            if instance.alive() and instance.proc is not None:
                instance.proc.send_signal(signal.SIGTERM)
        for instance in self.instances:
            instance.stop()

    def http_ports(self) -> list[int]:
        """The HTTP ports of the live instances that serve HTTP."""
        return [i.http_port for i in self.instances if i.http_port > 0 and i.alive()]

    def dead(self) -> list[Instance]:
        """Instances whose process exited on its own."""
        return [i for i in self.instances if not i.alive()]

    def owner_of_port(self, local_port: int, remote_port: int) -> Instance | None:
        """The live instance holding the connection from that local port to that remote port, if any."""
        inode = socket_inode(local_port, remote_port)
        if inode is None:
            return None
        return next((i for i in self.instances if i.owns_socket(inode)), None)

    def kill_and_restart(self, instance: Instance, pause: float = 1.0) -> None:
        """SIGKILL the instance, wait a moment, start a new process in its place."""
        instance.kill()
        time.sleep(pause)
        instance.start()

    @property
    def logs(self) -> list[Path]:
        return [log for instance in self.instances for log in instance.logs]

    @property
    def runs(self) -> int:
        return sum(len(instance.logs) for instance in self.instances)
