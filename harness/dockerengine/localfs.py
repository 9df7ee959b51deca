"""A local engine's container files read from the host, without an engine call.

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
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import IO


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
