"""Find what runs that were killed outright (SIGKILL) left behind, and remove it.

Every container the harness creates carries an owner label, ``host/pid/start-ticks`` of
the pytest process that made it, and every temporary directory carries the same token in
its name. A resource is an orphan only when its owner ran on this host and that process
is gone: the start ticks guard against a reused pid, and another live run's resources,
on this host or another one sharing the engine, are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import docker
import docker.errors

OWNER_LABEL = "org.psc-harness.owner"
TEMP_PREFIX = "psc-harness-"


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces: the fields we want come after its closing ")".
    return stat.rsplit(")", 1)[1].split()[19]


def _place() -> str:
    """This host and PID namespace: pids are comparable only within one."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}:{namespace}"


def owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{_place()}/{pid}/{_start_ticks(pid) or 0}"


def owner_gone(token: str) -> bool:
    """True only when the owner surely is gone: ran here, and its process no longer exists."""
    try:
        host, pid, ticks = token.rsplit("/", 2)
        number = int(pid)
    except ValueError:
        return False
    if host != _place() or not Path("/proc/self/stat").exists():
        return False
    return _start_ticks(number) != ticks


def temp_dir_prefix(session_id: str) -> str:
    _host, pid, ticks = owner_token().rsplit("/", 2)
    return f"{TEMP_PREFIX}{pid}-{ticks}-{session_id}-"


def reap(client: docker.DockerClient, temp_root: Path | None = None) -> list[str]:
    """Remove orphaned containers (with their anonymous volumes) and temporary directories."""
    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
        if owner_gone(container.labels.get(OWNER_LABEL, "")):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
                removed.append(f"container {container.name}")
    root = temp_root or Path(tempfile.gettempdir())
    for directory in root.glob(f"{TEMP_PREFIX}*"):
        parts = directory.name.removeprefix(TEMP_PREFIX).split("-", 2)
        if len(parts) == 3 and owner_gone(f"{_place()}/{parts[0]}/{parts[1]}"):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(f"directory {directory}")
    return removed
