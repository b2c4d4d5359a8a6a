"""Start, stop and inspect the local stack: Azurite plus the Entra/Graph emulators.

Azurite keeps its data on disk, in a folder of the state directory that every start empties: in memory it
froze for 3 to 15 s once a minute or two into a run (its clean-up cycle at full CPU; docs/performance.md),
and on disk it can also be stopped and started again with its data, which is how a chaos run pauses
storage (stop_storage, start_storage).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack.certs import APP_CREDENTIAL_FILE, ensure_app_credential, ensure_certs

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_DIR = REPO_ROOT / "devstack" / "seed"
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"
HOST = "127.0.0.1"
FIXED_PORTS = {"blob": 10000, "queue": 10001, "table": 10002, "entra": 5443, "graph": 5444, "receiver": 5445}
# Azurite's well-known development account; public by design.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENDPOINTS_FILE = "endpoints.json"
AZURITE_DATA = "azurite-data"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
# Marker expected in /proc/<pid>/cmdline, so a recycled pid is never mistaken for ours.
PROCESS_MARKERS = {"azurite": "azurite", "emulators": "devstack.emulators"}

# Popen handles of processes this interpreter started, so stop_stack can reap them (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The stack could not be started or inspected."""


# --- public API ------------------------------------------------------------------------------------

def start_stack(state_dir: Path | str, ports: str = "fixed") -> dict[str, Any]:
    """Start Azurite and the emulators (no-op if already up); returns the endpoints dict."""
    return _start(Path(state_dir), ports)[0]


def provision(endpoints: dict[str, Any]) -> None:
    """What `azd provision` makes before the app runs, made here too: the queues of infra/main.bicep.

    Its queueNames are shared.queues.ALL_QUEUES (tests/infra checks that). Producers (the demo, the examples,
    Event Grid) only send to `appointments`, as in Azure, where their role cannot create a queue. The app itself
    creates whatever it writes on first use, so a test may also start from an empty account.
    """
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueServiceClient

    from shared.queues import ALL_QUEUES

    with QueueServiceClient.from_connection_string(endpoints["azurite"]["connection_string"]) as service:
        for name in ALL_QUEUES:
            with contextlib.suppress(ResourceExistsError):
                service.create_queue(name)


def stop_stack(state_dir: Path | str) -> None:
    """Terminate the recorded processes (whole process groups) and forget them; idempotent."""
    state = Path(state_dir).resolve()
    with _locked(state):
        endpoints = _read_endpoints(state)
        if endpoints:
            _terminate(endpoints.get("pids", {}))
        (state / ENDPOINTS_FILE).unlink(missing_ok=True)
        shutil.rmtree(state / AZURITE_DATA, ignore_errors=True)


def stop_storage(state_dir: Path | str) -> None:
    """Stop Azurite alone (SIGTERM, so it writes its data out), keeping its data: storage is unreachable."""
    state = Path(state_dir).resolve()
    with _locked(state):
        endpoints = load_endpoints(state)
        _terminate({"azurite": endpoints["pids"].get("azurite", 0)})


def start_storage(state_dir: Path | str) -> None:
    """Start Azurite again on its ports, with the data it had when stop_storage stopped it."""
    state = Path(state_dir).resolve()
    with _locked(state):
        endpoints = load_endpoints(state)
        if _pid_alive(endpoints["pids"].get("azurite"), "azurite"):
            return
        port_map = {name: int(endpoints["ports"][name]) for name in ("blob", "queue", "table")}
        endpoints["pids"]["azurite"] = _spawn(_azurite_cmd(port_map, state / AZURITE_DATA), state / "azurite.log",
                                              state)
        _wait_ready(endpoints, state)
        _write_json(state / ENDPOINTS_FILE, endpoints)


def load_endpoints(state_dir: Path | str) -> dict[str, Any]:
    """Read STATE_DIR/endpoints.json; raises StackError if the stack was never started."""
    endpoints = _read_endpoints(Path(state_dir).resolve())
    if endpoints is None:
        raise StackError(f"no {ENDPOINTS_FILE} in {state_dir}: run `python -m devstack up` first")
    return endpoints


def stack_health(endpoints: dict[str, Any]) -> dict[str, bool]:
    """Whether each component's process is alive and answering HTTP."""
    pids = endpoints.get("pids", {})
    ca = endpoints["ca_bundle"]
    azurite_ok = _pid_alive(pids.get("azurite"), "azurite") and all(
        _http_ok(url, ca) for url in _azurite_probes(endpoints["azurite"]))
    emulators_alive = _pid_alive(pids.get("emulators"), "emulators")
    return {
        "azurite": azurite_ok,
        "entra": emulators_alive and _http_ok(_entra_probe(endpoints["entra"]), ca),
        "graph": emulators_alive and _http_ok(endpoints["graph"]["admin_url"] + "/stats", ca),
        "receiver": emulators_alive and _http_ok(endpoints["receiver"]["admin_url"] + "/deliveries", ca),
    }


# --- start -----------------------------------------------------------------------------------------

def _start(state_dir: Path, ports: str) -> tuple[dict[str, Any], bool]:
    """Start the stack; the flag says whether it was already running."""
    if ports not in ("fixed", "auto"):
        raise StackError("ports must be 'fixed' or 'auto'")
    state = state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    with _locked(state):
        existing = _read_endpoints(state)
        if existing and all(_pid_alive(existing["pids"].get(n), n) for n in PROCESS_MARKERS):
            return existing, True
        if existing:  # half dead: clear what is left before starting afresh
            _terminate(existing.get("pids", {}))
            (state / ENDPOINTS_FILE).unlink(missing_ok=True)
        certs = ensure_certs(state)
        ensure_app_credential(state)
        _ensure_azurite()
        directory = json.loads((SEED_DIR / "directory.json").read_text())
        # Auto ports can be taken between probing and binding; a second round with fresh ports fixes that.
        attempts = 3 if ports == "auto" else 1
        for attempt in range(1, attempts + 1):
            port_map = _free_ports() if ports == "auto" else _check_fixed_ports()
            endpoints = _endpoints(state, certs.ca_pem, port_map, directory)
            pids: dict[str, int] = {}
            endpoints["ports"] = port_map
            # A fresh, empty store on every start, as the in-memory one was.
            shutil.rmtree(state / AZURITE_DATA, ignore_errors=True)
            (state / AZURITE_DATA).mkdir()
            try:
                pids["azurite"] = _spawn(_azurite_cmd(port_map, state / AZURITE_DATA), state / "azurite.log", state)
                pids["emulators"] = _spawn(_emulators_cmd(state, port_map), state / "emulators.log",
                                           REPO_ROOT)
                endpoints["pids"] = pids
                _wait_ready(endpoints, state)
                provision(endpoints)
            except BaseException:
                _terminate(pids)
                if attempt == attempts:
                    raise
                continue
            _write_json(state / ENDPOINTS_FILE, endpoints)
            return endpoints, False
    raise AssertionError("unreachable")


def _endpoints(state: Path, ca_pem: Path, p: dict[str, int], directory: dict[str, Any]) -> dict[str, Any]:
    tenant = directory["tenant_id"]
    client = directory["clients"][0]
    tenants = {t["tenant_id"]: t.get("display_name", t["tenant_id"])
               for t in (directory, *directory.get("customer_tenants", []))}
    blob, queue, table = (f"http://{HOST}:{p[k]}/{ACCOUNT_NAME}" for k in ("blob", "queue", "table"))
    conn = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={blob};QueueEndpoint={queue};TableEndpoint={table};")
    entra_base = f"https://{HOST}:{p['entra']}"
    graph_base = f"https://{HOST}:{p['graph']}"
    receiver_base = f"https://{HOST}:{p['receiver']}"
    return {
        "state_dir": str(state),
        "ca_bundle": str(ca_pem),
        "pids": {},
        "azurite": {"connection_string": conn, "blob": blob, "queue": queue, "table": table},
        "entra": {"base_url": entra_base, "authority": f"{entra_base}/{tenant}", "tenant_id": tenant,
                  "issuer": f"{entra_base}/{tenant}/v2.0", "admin_url": f"{entra_base}/_admin",
                  "identity_endpoint": f"{entra_base}/msi/token",
                  "tenants": {tid: {"display_name": name, "authority": f"{entra_base}/{tid}",
                                    "issuer": f"{entra_base}/{tid}/v2.0"} for tid, name in tenants.items()}},
        "graph": {"base_url": f"{graph_base}/v1.0", "admin_url": f"{graph_base}/_admin"},
        "receiver": {"url": f"{receiver_base}/webhooks", "admin_url": f"{receiver_base}/_admin"},
        "client": {"client_id": client["client_id"], "client_secret": client["client_secret"],
                   "app_credential_pem": str(state / APP_CREDENTIAL_FILE)},
        "settings": {
            # Every setting the app reads has its local value in the sample; the stack overrides
            # only what depends on where it runs.
            **_sample_settings(),
            "AzureWebJobsStorage": conn,
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "APP_ENVIRONMENT": "development",
            "GRAPH_BASE_URL": f"{graph_base}/v1.0",
            "ENTRA_AUTHORITY": entra_base,
            "ENTRA_TENANT_ID": tenant,
            "ENTRA_CLIENT_ID": client["client_id"],
            # No client secret: the app proves itself with its managed identity's token (a federated credential),
            # which the Entra emulator's App Service endpoint hands out as the platform would.
            "IDENTITY_ENDPOINT": f"{entra_base}/msi/token",
            "DEV_USERS_FILE": str(SEED_DIR / "directory.json"),
            "TLS_CA_BUNDLE": str(ca_pem),
            "WEBHOOK_URL": f"{receiver_base}/webhooks",
        },
    }


def _sample_settings() -> dict[str, str]:
    values: dict[str, str] = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"]
    return {key: str(REPO_ROOT / value) if key.endswith("_FILE") else value for key, value in values.items()}


def _azurite_cmd(p: dict[str, int], location: Path) -> list[str]:
    return [str(AZURITE_BIN), "--silent", "--location", str(location), "--disableTelemetry",
            "--skipApiVersionCheck", "--loose",
            "--blobHost", HOST, "--queueHost", HOST, "--tableHost", HOST,
            "--blobPort", str(p["blob"]), "--queuePort", str(p["queue"]), "--tablePort", str(p["table"])]


def _emulators_cmd(state: Path, p: dict[str, int]) -> list[str]:
    return [sys.executable, "-m", "devstack.emulators", "--state-dir", str(state), "--host", HOST,
            "--entra-port", str(p["entra"]), "--graph-port", str(p["graph"]), "--receiver-port", str(p["receiver"])]


def _spawn(cmd: list[str], log_path: Path, cwd: Path) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        # A new session detaches it from our terminal and makes its pid the process-group id for stop.
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _children[proc.pid] = proc
    return proc.pid


def _ensure_azurite() -> None:
    if AZURITE_BIN.exists():
        return
    npm_cmd = ["npm", "ci"] if (REPO_ROOT / "package-lock.json").exists() else ["npm", "install"]
    print(f"azurite missing; running {' '.join(npm_cmd)} in {REPO_ROOT}", file=sys.stderr)
    subprocess.run(npm_cmd, cwd=REPO_ROOT, check=True)
    if not AZURITE_BIN.exists():
        raise StackError(f"{AZURITE_BIN} still missing after {' '.join(npm_cmd)}")


def _free_ports() -> dict[str, int]:
    # Hold all sockets open together so the five ports are distinct.
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in FIXED_PORTS:
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((HOST, 0))
            socks.append(s)
        return {name: s.getsockname()[1] for name, s in zip(FIXED_PORTS, socks, strict=True)}


def _check_fixed_ports() -> dict[str, int]:
    busy = []
    for name, port in FIXED_PORTS.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the servers themselves do: a port in TIME_WAIT after the last stack stopped is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                busy.append(f"{name}={port}")
    if busy:
        raise StackError(f"ports in use: {', '.join(busy)} (another stack running? try --ports auto)")
    return dict(FIXED_PORTS)


def _wait_ready(endpoints: dict[str, Any], state: Path) -> None:
    ca = endpoints["ca_bundle"]
    probes = [("azurite", u) for u in _azurite_probes(endpoints["azurite"])] + [
        ("emulators", _entra_probe(endpoints["entra"])),
        ("emulators", endpoints["graph"]["admin_url"] + "/stats"),
    ]
    deadline = time.monotonic() + START_TIMEOUT
    pending = probes
    while pending:
        for name in PROCESS_MARKERS:
            if not _pid_alive(endpoints["pids"][name], name):
                raise StackError(f"{name} exited during start-up:\n{_tail(state / f'{name}.log')}")
        pending = [(name, url) for name, url in pending if not _http_ok(url, ca)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise StackError(f"timed out waiting for {', '.join(u for _, u in pending)}")
        time.sleep(0.05)


def _azurite_probes(azurite: dict[str, str]) -> list[str]:
    return [f"{azurite['blob']}?comp=list", f"{azurite['queue']}?comp=list", f"{azurite['table']}/Tables"]


def _entra_probe(entra: dict[str, str]) -> str:
    return f"{entra['authority']}/v2.0/.well-known/openid-configuration"


def _http_ok(url: str, ca: str) -> bool:
    """True if something speaking HTTP answers (any status: Azurite rejects unsigned requests)."""
    host, _, port = url.split("/")[2].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            pass
    except OSError:
        return False
    ctx = ssl.create_default_context(cafile=ca) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx):  # noqa: S310 - our own http(s) URLs
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ssl.SSLError):
        return False


# --- processes -------------------------------------------------------------------------------------

def _pid_alive(pid: int | None, name: str) -> bool:
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:
        # Our own child: poll() is exact, and its cmdline is still ours until exec() has run.
        return child.poll() is None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z" and PROCESS_MARKERS[name] in cmdline


def _terminate(pids: dict[str, int]) -> None:
    """SIGTERM each recorded process group, then SIGKILL whatever is left after STOP_TIMEOUT."""
    live = {name: pid for name, pid in pids.items() if name in PROCESS_MARKERS and _pid_alive(pid, name)}
    for pid in live.values():
        _killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(_pid_alive(p, n) for n, p in live.items()):
        time.sleep(0.05)
    for pid in live.values():
        # Also catches group members (node workers) that outlived their leader.
        _killpg(pid, signal.SIGKILL)
        child = _children.pop(pid, None)
        if child is not None:
            child.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- files -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(state: Path) -> Iterator[None]:
    state.mkdir(parents=True, exist_ok=True)
    with open(state / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_endpoints(state: Path) -> dict[str, Any] | None:
    try:
        endpoints: dict[str, Any] = json.loads((state / ENDPOINTS_FILE).read_text())
        return endpoints
    except FileNotFoundError:
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- CLI -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """`python -m devstack up|down|status|env`."""
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".devstack")
    parser.add_argument("--ports", choices=["fixed", "auto"], default="fixed")
    args = parser.parse_args(argv)
    state: Path = args.state_dir.resolve()
    try:
        if args.command == "up":
            started = time.monotonic()
            endpoints, already = _start(state, args.ports)
            if already:
                print(f"devstack already up (state dir {state})")
            else:
                print(f"devstack up in {time.monotonic() - started:.1f}s (state dir {state})")
            _print_summary(endpoints)
        elif args.command == "down":
            stop_stack(state)
            print("devstack down")
        elif args.command == "status":
            recorded = _read_endpoints(state)
            if recorded is None:
                print(f"devstack is not up (no {state / ENDPOINTS_FILE})")
                return 1
            health = stack_health(recorded)
            _print_summary(recorded, health)
            return 0 if all(health.values()) else 1
        else:
            for key, value in load_endpoints(state)["settings"].items():
                print(f"export {key}={shlex.quote(value)}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_summary(endpoints: dict[str, Any], health: dict[str, bool] | None = None) -> None:
    def mark(name: str) -> str:
        return "" if health is None else ("  [up]" if health[name] else "  [DOWN]")

    az = endpoints["azurite"]
    print(f"  azurite  blob {az['blob']}  queue {az['queue']}  table {az['table']}{mark('azurite')}")
    print(f"  entra    {endpoints['entra']['authority']}{mark('entra')}")
    print(f"  graph    {endpoints['graph']['base_url']}{mark('graph')}")
    print(f"  CA       {endpoints['ca_bundle']}")
    print(f"  settings: eval \"$(python -m devstack env --state-dir {endpoints['state_dir']})\"")
