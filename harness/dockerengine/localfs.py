"""A local engine's container files and figures read from the host, without an engine call.

Each call of the engine's archive endpoint costs the engine a mount of the container's
file system (about 50 ms); a job's outputs are read after every successful /run. When the
engine runs on this machine, in this process's PID namespace, and the harness may look
into the model's root (``/proc/<pid>/root``), an output that is a regular file is read
from there instead, as safely:

- every lookup is relative to an open directory, one name at a time, never following a
  link (``O_NOFOLLOW``), and never ``..``;
- the file is first opened as a path only (``O_PATH``): a FIFO or a device is never
  opened, a link never followed; only a regular file is then opened for reading, through
  that same descriptor, and read up to the size it had;
- the root is proved to be the container's by the harness's own directory in it, whose
  random name nothing else can hold.

Anything else (a link, a directory, a special file, a missing file, any error) gives
None: the caller asks the engine's archive endpoint, which stays the reference.

The engine's stats endpoint answers at its next collection, up to a second away, and the
read after the last /run is waited for before /shutdown. The same figures are in the
container's cgroup, which the kernel names in ``/proc/<pid>/cgroup`` (a path that must
hold the container's id, under ``/sys/fs/cgroup``, where nothing the model writes is):
read from there they come at once, as the engine would give them (``cgroup_stats``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_FILE_BYTES = 64 * 1024  # a cgroup file read, at most (memory.stat is about 2 KiB)


class ContainerRoot:
    """The model's root directory, opened once from the host (a descriptor, closed at removal)."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    @classmethod
    def open(cls, pid: int) -> ContainerRoot | None:
        """The root of process ``pid`` as the process sees it, or None if it cannot be opened."""
        if pid <= 0:
            return None
        try:
            return cls(os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError:
            return None

    def close(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)

    @contextlib.contextmanager
    def regular_file(self, path: str) -> Iterator[tuple[int, IO[bytes]] | None]:
        """The regular file at ``path`` (absolute, inside the container): its size and an open
        stream, or None when it is anything else or cannot be read this way."""
        opened = self._open(path)
        if opened is None:
            yield None
            return
        size, stream = opened
        with stream:
            yield size, stream

    def _open(self, path: str) -> tuple[int, IO[bytes]] | None:
        names = path.strip("/").split("/")
        if self._descriptor is None or any(n in ("", ".", "..") for n in names):
            return None
        held: list[int] = []
        try:
            directory = self._descriptor
            for name in names[:-1]:
                directory = os.open(
                    name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory
                )
                held.append(directory)
            # As a path only: opening a FIFO or a device could block or act; a link is not followed.
            found = os.open(names[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            held.append(found)
            seen = os.fstat(found)
            if not stat.S_ISREG(seen.st_mode):
                return None
            # Reopened through the descriptor itself: the same file, whatever the name holds now.
            flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
            readable = os.open(f"/proc/self/fd/{found}", flags)
            opened = os.fstat(readable)
            same = (opened.st_dev, opened.st_ino) == (seen.st_dev, seen.st_ino)
            if not (stat.S_ISREG(opened.st_mode) and same):
                os.close(readable)
                return None
            return opened.st_size, os.fdopen(readable, "rb", buffering=0)
        except OSError:
            return None
        finally:
            for descriptor in held:
                os.close(descriptor)


def cgroup_stats(pid: int, container_id: str, root: Path = CGROUP_ROOT) -> dict[str, Any] | None:
    """The container's memory and CPU figures as the engine's stats endpoint gives them
    (``memory_stats``, ``cpu_stats``, ``read``), from its cgroup; None when they cannot be
    read there (another PID namespace, a VM, no right to read, the container gone)."""
    paths = _cgroup_paths(pid, container_id)
    try:
        if "memory" in paths:  # cgroup v1: the engine reports the high-water mark too
            memory_dir = root / "memory" / paths["memory"]
            memory: dict[str, Any] = {
                "usage": _number(memory_dir / "memory.usage_in_bytes"),
                "max_usage": _number(memory_dir / "memory.max_usage_in_bytes"),
                "stats": _keyed(memory_dir / "memory.stat"),
            }
            cpu_dir = next(
                (root / name / path for name, path in paths.items() if "cpuacct" in name.split(",")), None
            )
            if cpu_dir is None:
                return None
            used = _number(cpu_dir / "cpuacct.usage")
        elif "" in paths:  # cgroup v2: no high-water mark in the engine's figures either
            group = root / paths[""]
            memory = {"usage": _number(group / "memory.current"), "stats": _keyed(group / "memory.stat")}
            used = _keyed(group / "cpu.stat")["usage_usec"] * 1000
        else:
            return None
    except (OSError, ValueError, KeyError):
        return None
    now = time.time_ns()
    read = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z"
    return {
        "read": read,
        "memory_stats": memory,
        "cpu_stats": {"cpu_usage": {"total_usage": used}, "online_cpus": os.sysconf("SC_NPROCESSORS_ONLN")},
    }


def _cgroup_paths(pid: int, container_id: str) -> dict[str, str]:
    """Each controller's cgroup of the process (v2: under ""), if it is the container's own."""
    if pid <= 0 or not container_id:
        return {}
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as stream:
            text = stream.read(CGROUP_FILE_BYTES).decode("ascii", errors="replace")
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        names = parts[2].strip("/").split("/")
        # Its own group, named by its id (a reused PID is another process's, never counted).
        if not any(container_id in name for name in names) or any(n in ("", ".", "..") for n in names):
            continue
        controllers = parts[1]
        if controllers.startswith("name="):
            continue
        paths[controllers] = "/".join(names)
        for controller in controllers.split(","):
            paths.setdefault(controller, "/".join(names))
    return paths


def _read(path: Path) -> str:
    with open(path, "rb") as stream:
        return stream.read(CGROUP_FILE_BYTES).decode("ascii")


def _number(path: Path) -> int:
    return int(_read(path).strip())


def _keyed(path: Path) -> dict[str, int]:
    found = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            found[key] = int(value)
    return found
