"""Who made a resource: the labels on everything the harness creates in an engine.

An owner token, ``host:pid-namespace/pid/start-ticks``, names the pytest process that made
a resource. A resource is an orphan only when its owner ran in this host and PID namespace
and that process is gone: the start ticks guard against a reused pid, and another live
run's resources, here or on another host sharing the engine, are never touched.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

LABEL = "org.psc-harness"
SESSION_LABEL = "org.psc-harness.session"
OWNER_LABEL = "org.psc-harness.owner"
LOADED_IMAGE_LABEL = "org.psc-harness.loaded-image"  # on the marker of an image a run loaded


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
        place, pid, ticks = token.rsplit("/", 2)
        number = int(pid)
    except ValueError:
        return False
    if place != _place() or not Path("/proc/self/stat").exists():
        return False
    return _start_ticks(number) != ticks


def labels(session_id: str) -> dict[str, str]:
    """The labels of every container and marker one run creates."""
    return {LABEL: "1", SESSION_LABEL: session_id, OWNER_LABEL: owner_token()}
