"""A second, real Docker engine on this machine that cannot see the harness's files.

It runs in its own mount namespace (with a private, empty ``/tmp``), keeps its data under
``DIRECTORY`` (outside ``/tmp``), serves its API on 127.0.0.2 and, as an alias, on 127.0.0.3,
and publishes containers' ports on 127.0.0.2 (its daemon's ``ip`` setting). Its containers
sit on a bridge of their own; nothing here ever connects to their addresses: only the
engine's port proxy does. Its API port and its bridge's subnet are chosen free when it
starts (another engine or bridge on the machine may hold any fixed one), and recorded in
its directory for the sessions that share it.

Starting is idempotent and shared: a session that finds it running (another session, an
xdist worker) uses it and registers as a user; the last user to leave stops it, removes
its bridge and its directory. An engine whose users all died (a killed session) is taken
over by the next session. Only processes this machinery started are ever signalled, by pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests

from harness.labels import owner_gone, owner_token

API_HOST = "127.0.0.2"
ALIAS_HOST = "127.0.0.3"  # the same engine's API, at an address where it publishes nothing
PUBLISH_IP = "127.0.0.2"
BRIDGE = "psctbr0"
BRIDGE_SUBNETS = [ipaddress.ip_network(f"172.29.{n}.0/24") for n in range(9, 255)]  # the first free one
DIRECTORY = Path(os.environ.get("PSC_ENGINE2_DIR", "/var/tmp/psc-harness-engine2"))
START_DEADLINE = 90.0
STOP_DEADLINE = 30.0
TOOLS = ("unshare", "dockerd", "ip", "fuse-overlayfs", "docker")
_STARTED: dict[int, subprocess.Popen[bytes]] = {}  # kept, to be waited for: the engines this process started


def unavailable() -> str | None:
    """Why the second engine cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "the second engine needs root (a bridge, a mount namespace, dockerd)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the second engine needs {', '.join(missing)} (not found on PATH)"
    if not Path("/dev/fuse").exists():
        return "the second engine's storage driver (fuse-overlayfs) needs /dev/fuse"
    return None


@dataclass(frozen=True)
class Addresses:
    """Where this engine serves its API and which subnet its bridge holds."""

    port: int
    bridge_address: str  # e.g. 172.29.9.1/24

    @property
    def url(self) -> str:
        return f"tcp://{API_HOST}:{self.port}"

    @property
    def alias_url(self) -> str:
        return f"tcp://{ALIAS_HOST}:{self.port}"

    def save(self, directory: Path) -> None:
        (directory / "addresses.json").write_text(
            json.dumps({"port": self.port, "bridge": self.bridge_address})
        )

    @staticmethod
    def of(directory: Path) -> Addresses | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            saved = json.loads((directory / "addresses.json").read_text())
            return Addresses(int(saved["port"]), str(saved["bridge"]))
        return None


def _free_port() -> int:
    """A port free on both API addresses (the engine binds it on each)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((API_HOST, 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind((ALIAS_HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no port free on both {API_HOST} and {ALIAS_HOST} for the second engine's API")


def _free_subnet() -> str:
    """The first candidate subnet that no address or route of this machine overlaps."""
    taken = []
    for listing in (_ip("-j", "route", "show", "table", "all").stdout, _ip("-j", "addr", "show").stdout):
        for entry in json.loads(listing or "[]"):
            for text in [entry.get("dst", "")] + [
                f"{a['local']}/{a['prefixlen']}"
                for a in entry.get("addr_info", [])
                if a.get("family") == "inet"
            ]:
                with contextlib.suppress(ValueError):
                    network = ipaddress.ip_network(text, strict=False)
                    if network.version == 4 and network.prefixlen > 0:
                        taken.append(network)
    for subnet in BRIDGE_SUBNETS:
        if not any(subnet.overlaps(other) for other in taken):
            return f"{next(subnet.hosts())}/{subnet.prefixlen}"
    raise RuntimeError("no subnet free for the second engine's bridge among 172.29.9-254.0/24")


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    if pid in _STARTED:
        return _STARTED[pid].poll() is None  # reaped here, or it would linger as a zombie
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pid(directory: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((directory / "pid").read_text().strip())
    return None


@dataclass
class SecondEngine:
    directory: Path
    addresses: Addresses
    publish_ip: str = PUBLISH_IP

    @property
    def url(self) -> str:
        return self.addresses.url

    @property
    def alias_url(self) -> str:
        return self.addresses.alias_url

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version="auto", timeout=timeout)

    def env(self, **extra: str) -> dict[str, str]:
        """An environment whose docker CLI and harness use this engine."""
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "PSC_ENGINE_HOST")}
        env["DOCKER_HOST"] = self.url
        env.update(extra)
        return env

    def load(self, local: docker.DockerClient, tags: list[str]) -> None:
        """Copy images of the local engine into this one (``docker save | docker load``)."""
        client = self.client()
        missing = []
        for tag in tags:
            wanted = local.images.get(tag).id
            try:
                present = client.images.get(tag).id == wanted
            except docker.errors.ImageNotFound:
                present = False
            if not present:
                missing.append(tag)
        client.close()
        if not missing:
            return
        local_env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
        save = subprocess.Popen(["docker", "save", *missing], stdout=subprocess.PIPE, env=local_env)
        load = subprocess.run(
            ["docker", "load", "-q"], stdin=save.stdout, env=self.env(), capture_output=True, timeout=900
        )
        assert save.stdout is not None
        save.stdout.close()
        assert save.wait(timeout=60) == 0, "docker save failed"
        assert load.returncode == 0, load.stderr.decode(errors="replace")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _bridge_up(address: str) -> None:
    _ip("link", "add", "name", BRIDGE, "type", "bridge")
    _ip("addr", "add", address, "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def _start(directory: Path) -> Addresses:
    directory.mkdir(parents=True, exist_ok=True)
    config = {"storage-driver": "fuse-overlayfs", "mtu": 1400, "ip": PUBLISH_IP}
    (directory / "daemon.json").write_text(json.dumps(config))
    if _ip("link", "show", BRIDGE, check=False).returncode == 0:
        _ip("link", "del", BRIDGE)  # left by a killed session: its subnet is chosen anew
    addresses = Addresses(_free_port(), _free_subnet())
    addresses.save(directory)
    _bridge_up(addresses.bridge_address)
    dockerd = (
        f"mount -t tmpfs none /tmp && exec dockerd --config-file {directory}/daemon.json "
        f"--data-root {directory}/data --exec-root {directory}/exec --pidfile {directory}/pid "
        f"-H {addresses.url} -H {addresses.alias_url} -b {BRIDGE} --iptables=false"
    )
    log = (directory / "dockerd.log").open("ab")
    # A session of its own (the pid is dockerd's: unshare and sh exec it), in a private mount namespace.
    process = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", dockerd],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    _STARTED[process.pid] = process
    (directory / "session").write_text(str(process.pid))
    deadline = time.monotonic() + START_DEADLINE
    while True:
        if answers(API_HOST, addresses.port):
            client = docker.DockerClient(base_url=addresses.url, version="1.40", timeout=5)  # connects on use
            try:
                client.version()
                return addresses
            except (docker.errors.DockerException, requests.RequestException):
                pass
            finally:
                client.close()
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (directory / "dockerd.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the second engine did not start within {START_DEADLINE:g} s:\n{tail}")
        time.sleep(0.2)


def _engine_pids(directory: Path, session: int | None) -> list[int]:
    """What the engine started and left: processes of its session, or naming its directory
    (its containerd, shims and fuse-overlayfs mounts start sessions of their own)."""
    found = []
    mark = str(directory).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue  # a zombie: gone already, waiting for its parent
            ours = session is not None and int(fields[3]) == session  # field 6 of stat: the session
            if ours or mark in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _stop(directory: Path) -> None:
    session = None
    with contextlib.suppress(OSError, ValueError):
        session = int((directory / "session").read_text())
    pid = _pid(directory) or session
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGTERM)  # dockerd stops its containers and containerd
        deadline = time.monotonic() + STOP_DEADLINE
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    for leftover in _engine_pids(directory, session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _engine_pids(directory, session) and time.monotonic() < deadline:
        time.sleep(0.1)
    for started in list(_STARTED.values()):
        if started.poll() is not None:
            del _STARTED[started.pid]
    if _ip("link", "show", BRIDGE, check=False).returncode == 0:
        _ip("link", "del", BRIDGE, check=False)
    shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _users(directory: Path) -> Path:
    return directory / "users"


def _live_users(directory: Path) -> list[Path]:
    users = _users(directory)
    if not users.is_dir():
        return []
    return [user for user in users.iterdir() if not owner_gone(user.read_text())]


@contextlib.contextmanager
def second_engine(directory: Path = DIRECTORY) -> Iterator[SecondEngine]:
    """The second engine, started if needed; stopped once its last user is done."""
    me = owner_token()
    with _locked(directory):
        running = (pid := _pid(directory)) is not None and _alive(pid)
        addresses = Addresses.of(directory)
        if running and (addresses is None or not answers(API_HOST, addresses.port)):
            _stop(directory)  # left by a killed session, and no longer serving
            running = False
        if running and not _live_users(directory) and _users(directory).is_dir():
            for user in _users(directory).iterdir():  # all gone: take it over
                user.unlink()
        if not running or addresses is None:
            shutil.rmtree(directory, ignore_errors=True)
            try:
                addresses = _start(directory)
            except BaseException:
                _stop(directory)
                raise
        _users(directory).mkdir(exist_ok=True)
        mine = _users(directory) / f"{os.getpid()}-{time.monotonic_ns()}"
        mine.write_text(me)
    try:
        yield SecondEngine(directory, addresses)
    finally:
        with _locked(directory):
            mine.unlink(missing_ok=True)
            if not _live_users(directory):
                _stop(directory)
