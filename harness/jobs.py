"""The files of one /run job: inputs copied into the container, outputs read back, both
through the engine's archive endpoint (docs/contract.md#run-job).

Each job gets fresh directories under a random name, created by the harness itself, so
nothing the model left from an earlier job can be mistaken for this job's, or break it.
An output is a regular file directly inside the job's output directory; a link, a
directory or a special file is reported as what it is, and never followed.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .container import ModelContainer
from .http import Exchange

SPOOL_IN_MEMORY = 8 * 2**20  # a job's input archive larger than this is spooled to an unnamed file
OUTPUT_KEEP = 32 * 2**20  # the most of one output held in memory
OUTPUT_SKIP = 256 * 2**20  # an oversized output larger than this ends the reading of the archive
LISTED_OUTPUTS = 100  # names of undeclared outputs kept for the report


@dataclass
class OutputFile:
    """One entry of the job's output directory, as the engine archived it."""

    name: str
    kind: str  # "file", "link", "directory", "special" or "missing" (or "unread")
    size: int = 0
    content: bytes | None = None  # the whole content, when it is a file of at most the cap
    sha256: str | None = None
    link_target: str | None = None

    def is_file(self) -> bool:
        return self.kind == "file"

    def exists(self) -> bool:
        return self.kind not in ("missing", "unread")

    def read_bytes(self) -> bytes:
        if self.kind != "file":
            raise FileNotFoundError(f"output {self.name} is not a regular file ({self.describe()})")
        if self.content is None:
            raise ValueError(f"output {self.name} is {self.size} bytes: too large to hold")
        return self.content

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def describe(self) -> str:
        if self.kind == "link":
            return f"a link to {self.link_target!r}, not a file"
        if self.kind == "directory":
            return "a directory, not a file"
        if self.kind == "special":
            return "a special file (FIFO or device), not a regular file"
        if self.kind == "unread":
            return "not read: an earlier output was too large"
        if self.kind == "missing":
            return "not written"
        return f"a file of {self.size} bytes"


@dataclass
class JobResult:
    exchange: Exchange
    input_dir: str  # inside the container
    output_dir: str
    outputs: dict[str, OutputFile] = field(default_factory=dict)
    undeclared: list[str] = field(default_factory=list)

    def output(self, name: str) -> OutputFile:
        return self.outputs.get(name) or OutputFile(name, "missing")


@dataclass(frozen=True)
class JobDirs:
    root: str
    input_dir: str
    output_dir: str


def stage(container: ModelContainer, inputs: Mapping[str, bytes | Path]) -> JobDirs:
    """Create the job's directories in the container, with its input files."""
    return stage_many(container, [inputs])[0]


def stage_many(container: ModelContainer, jobs: Sequence[Mapping[str, bytes | Path]]) -> list[JobDirs]:
    """Create several jobs' directories with one copy into the container (each copy costs
    the engine a mount of the container's file system, whatever its size)."""
    names = [f"psc-job-{secrets.token_hex(8)}" for _ in jobs]
    now = time.time()
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name, inputs in zip(names, jobs, strict=True):
                # The model may run as any user: inputs readable, the output directory writable.
                for directory, mode in ((name, 0o755), (f"{name}/in", 0o755), (f"{name}/out", 0o777)):
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
                    archive.addfile(info)
                for file_name, content in inputs.items():
                    info = tarfile.TarInfo(f"{name}/in/{file_name}")
                    info.mode, info.mtime = 0o644, now
                    if isinstance(content, Path):
                        info.size = content.stat().st_size
                        with content.open("rb") as stream:
                            archive.addfile(info, stream)
                    else:
                        info.size = len(content)
                        archive.addfile(info, io.BytesIO(content))
        spool.seek(0)
        container.put_archive("/", spool)
    return [JobDirs(f"/{name}", f"/{name}/in", f"/{name}/out") for name in names]


def collect(
    container: ModelContainer, dirs: JobDirs, caps: Mapping[str, int], default_cap: int = OUTPUT_KEEP
) -> tuple[dict[str, OutputFile], list[str]]:
    """The entries of the job's output directory: the declared ones by name, and the others' names.

    A file is held whole only when it is within its cap (its declared maxSize, at most
    OUTPUT_KEEP); a larger one is measured and hashed as it streams by, or, past
    OUTPUT_SKIP, ends the reading.
    """
    found: dict[str, OutputFile] = {}
    others: list[str] = []
    with container.read_archive(dirs.output_dir) as archive:
        if archive is None:
            return found, others
        for member in archive:
            parts = member.name.split("/")
            if len(parts) != 2 or not parts[1]:
                continue  # the directory itself, or something nested deeper
            name = parts[1]
            if name not in caps:
                if len(others) < LISTED_OUTPUTS:
                    others.append(name)
                continue
            entry = _entry(archive, member, name, min(caps[name], OUTPUT_KEEP) if caps[name] else default_cap)
            found[name] = entry
            if entry.is_file() and entry.sha256 is None:
                for rest in caps:
                    found.setdefault(rest, OutputFile(rest, "unread"))
                break
    return found, others


def _entry(archive: tarfile.TarFile, member: tarfile.TarInfo, name: str, cap: int) -> OutputFile:
    if member.issym() or member.islnk():
        return OutputFile(name, "link", link_target=member.linkname[:256])
    if member.isdir():
        return OutputFile(name, "directory")
    if not member.isreg():
        return OutputFile(name, "special")
    entry = OutputFile(name, "file", size=member.size)
    if member.size > OUTPUT_SKIP:
        return entry  # neither held nor hashed: sha256 None tells the caller to stop here
    stream = archive.extractfile(member)
    assert stream is not None
    digest = hashlib.sha256()
    kept = bytearray() if member.size <= cap else None
    for chunk in iter(lambda: _read(stream), b""):
        digest.update(chunk)
        if kept is not None:
            kept += chunk
    entry.sha256 = digest.hexdigest()
    entry.content = bytes(kept) if kept is not None else None
    return entry


def _read(stream: IO[bytes]) -> bytes:
    return stream.read(256 * 1024)
