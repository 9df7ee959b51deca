"""The files of one /run job: inputs copied into the container, outputs read back, both
through the engine's archive endpoint (docs/contract.md#run-job).

Each job gets fresh directories, created by the harness itself, so nothing the model left
from an earlier job can be mistaken for this job's, or break it. The input and the output
directory have unrelated random names: a model that ignores the job's ``output`` and
writes next to its input finds no output directory there.
An output is a regular file directly inside the job's output directory; a link, a
directory or a special file is reported as what it is, and never followed. Each declared
output is read on its own (one archive of that path: a hard link is sent as the file it
is; on a local engine a regular file is read from the host instead, as safely: see
dockerengine/localfs.py), and the directory's other entries are only listed, header by
header, never read.
"""

from __future__ import annotations

import hashlib
import secrets
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import SetupError
from .http import Exchange
from .runtime import ModelProcess

IN_MEMORY = 8 * 2**20  # a job's input archive up to this size is sent as one body, a larger one streamed
READ_CHUNK = 2**20
END_BLOCKS = 2 * tarfile.BLOCKSIZE  # a TAR ends with two zero blocks
OUTPUT_KEEP = 32 * 2**20  # the most of one output held in memory
OUTPUT_SKIP = 256 * 2**20  # an output larger than this is neither held nor hashed, only measured
LISTED_OUTPUTS = 100  # names of undeclared outputs kept for the report
LIST_BYTES = 4 * 2**20  # the most of the directory's archive read to list its entries
LIST_SECONDS = 10.0  # and the longest time spent listing them


@dataclass
class OutputFile:
    """One entry of the job's output directory, as the engine archived it."""

    name: str
    kind: str  # "file", "link", "directory", "special" or "missing"
    size: int = 0
    content: bytes | None = None  # the whole content, when it is a file of at most the cap
    sha256: str | None = None
    link_target: str | None = None

    def is_file(self) -> bool:
        return self.kind == "file"

    def exists(self) -> bool:
        return self.kind != "missing"

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
        if self.kind == "missing":
            return "not written"
        return f"a file of {self.size} bytes"


@dataclass
class JobResult:
    exchange: Exchange
    input_dir: str  # inside the container
    output_dir: str
    # Reads the declared outputs back: at once after a 200, on first use otherwise.
    reader: Callable[[], dict[str, OutputFile]] | None = None
    # Lists the other entries: only when asked for (each archive read costs the engine a mount).
    lister: Callable[[], list[str]] | None = None
    _outputs: dict[str, OutputFile] | None = None
    _undeclared: list[str] | None = None

    def read(self) -> tuple[dict[str, OutputFile], list[str]]:
        return self.outputs, self.undeclared

    @property
    def outputs(self) -> dict[str, OutputFile]:
        if self._outputs is None:
            self._outputs = self.reader() if self.reader is not None else {}
        return self._outputs

    @property
    def undeclared(self) -> list[str]:
        if self._undeclared is None:
            self._undeclared = self.lister() if self.lister is not None else []
        return self._undeclared

    def output(self, name: str) -> OutputFile:
        return self.outputs.get(name) or OutputFile(name, "missing")


@dataclass(frozen=True)
class JobDirs:
    input_dir: str
    output_dir: str


def stage(container: ModelProcess, inputs: Mapping[str, bytes | Path]) -> JobDirs:
    """Create the job's directories in the container, with its input files."""
    return stage_many(container, [inputs])[0]


def stage_many(container: ModelProcess, jobs: Sequence[Mapping[str, bytes | Path]]) -> list[JobDirs]:
    """Create several jobs' directories with one copy into the container (each copy costs
    the engine a mount of the container's file system, whatever its size)."""
    # Independent tokens: neither directory's path can be told from the other's.
    dirs = [JobDirs(f"/psc-in-{secrets.token_hex(8)}", f"/psc-out-{secrets.token_hex(8)}") for _ in jobs]
    archive = _InputArchive(list(zip(dirs, jobs, strict=True)), time.time())
    # Small: one body in memory. Large: streamed as it is read, never spooled to the host's disk.
    container.put_archive("/", archive.read_all() if len(archive) <= IN_MEMORY else archive)
    return dirs


class _InputArchive:
    """Jobs' directories and input files as a TAR stream of known length, made as it is sent.

    The model may run as any user: inputs are readable, the output directory writable.
    """

    def __init__(self, jobs: Sequence[tuple[JobDirs, Mapping[str, bytes | Path]]], now: float) -> None:
        self._entries: list[tuple[bytes, bytes | Path | None, int]] = []
        for dirs, inputs in jobs:
            in_name, out_name = dirs.input_dir.lstrip("/"), dirs.output_dir.lstrip("/")
            for directory, mode in ((in_name, 0o755), (out_name, 0o777)):
                info = tarfile.TarInfo(directory)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
                self._entries.append((_header(info), None, 0))
            for file_name, content in inputs.items():
                info = tarfile.TarInfo(f"{in_name}/{file_name}")
                info.mode, info.mtime = 0o644, now
                info.size = content.stat().st_size if isinstance(content, Path) else len(content)
                self._entries.append((_header(info), content, info.size))
        self._length = sum(len(h) + size + _padding(size) for h, _, size in self._entries) + END_BLOCKS

    def __len__(self) -> int:  # requests sends it with a Content-Length, not chunked
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        for header, content, size in self._entries:
            yield header
            if isinstance(content, Path):
                yield from _file_chunks(content, size)
            elif content is not None:
                yield bytes(content)
            yield b"\0" * _padding(size)
        yield b"\0" * END_BLOCKS

    def read_all(self) -> bytes:
        return b"".join(self)


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def _padding(size: int) -> int:
    return -size % tarfile.BLOCKSIZE


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes of the file, as its TAR header announced them."""
    left = size
    with path.open("rb") as stream:
        for chunk in _chunks(stream, size):
            left -= len(chunk)
            yield chunk
    if left:
        raise SetupError(f"the input file {path} shrank while it was copied into the container")


def _chunks(stream: IO[bytes], size: int) -> Iterator[bytes]:
    """At most ``size`` bytes of a stream, as they come; fewer if it ends first."""
    left = size
    while left:
        chunk = stream.read(min(READ_CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def collect(
    container: ModelProcess, dirs: JobDirs, caps: Mapping[str, int], default_cap: int = OUTPUT_KEEP
) -> tuple[dict[str, OutputFile], list[str]]:
    """The declared outputs by name, and the names of the directory's other entries."""
    return read_outputs(container, dirs.output_dir, caps, default_cap), list_undeclared(
        container, dirs.output_dir, caps
    )


def read_outputs(
    container: ModelProcess, output_dir: str, caps: Mapping[str, int], default_cap: int = OUTPUT_KEEP
) -> dict[str, OutputFile]:
    """Each declared output, read from an archive of its own path: one engine call per output
    (none for a regular file on a local engine).

    A file is held whole only when it is within its cap (its declared maxSize, at most
    OUTPUT_KEEP); a larger one is measured and hashed as it streams by, or, past
    OUTPUT_SKIP, only measured. Nothing else of the directory is read: an undeclared
    file, however large, costs nothing.
    """
    return {
        name: read_output(container, output_dir, name, min(cap, OUTPUT_KEEP) if cap else default_cap)
        for name, cap in caps.items()
    }


def read_output(container: ModelProcess, output_dir: str, name: str, cap: int) -> OutputFile:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"an output is a file name, not a path: {name!r}")
    # A regular file, on a local engine: read from the host without an engine call.
    with container.read_file(f"{output_dir}/{name}") as local:
        if local is not None:
            found = _file_entry(local[1], local[0], name, cap)
            if found is not None:
                return found
    # The engine archives the path itself without following it: a link or a FIFO is one
    # header, a directory is judged by its first member, and the stream is closed there.
    with container.read_archive(f"{output_dir}/{name}") as archive:
        if archive is None:
            return OutputFile(name, "missing")
        member = archive.next()
        if member is None:
            return OutputFile(name, "missing")
        return _entry(archive, member, name, cap)


def list_undeclared(container: ModelProcess, output_dir: str, declared: Iterable[str]) -> list[str]:
    """The names of the output directory's other entries, from their headers only.

    The archive of a directory carries each file's content after its header: the listing
    stops before the first content that would take it past LIST_BYTES (a model may leave
    a 32 GiB sparse file there), after LIST_SECONDS, or at LISTED_OUTPUTS names.
    """
    known = set(declared)
    others: list[str] = []
    deadline = time.monotonic() + LIST_SECONDS
    with container.read_archive(output_dir) as archive:
        if archive is None:
            return others
        while len(others) < LISTED_OUTPUTS and time.monotonic() < deadline:
            member = archive.next()
            if member is None:
                break
            parts = member.name.split("/")
            if len(parts) == 2 and parts[1] and parts[1] not in known:
                others.append(parts[1])
            if member.offset_data + member.size > LIST_BYTES:
                break  # the next header lies beyond this content: never read through it
    return others


def _entry(archive: tarfile.TarFile, member: tarfile.TarInfo, name: str, cap: int) -> OutputFile:
    # A hard-link member's content is that of an earlier member of the same archive; the
    # archive of one path has none, so such a member (never the engine's way of sending a
    # hard-linked file on its own) is refused, its target never looked up anywhere.
    if member.issym() or member.islnk():
        return OutputFile(name, "link", link_target=member.linkname[:256])
    if member.isdir():
        return OutputFile(name, "directory")
    if not member.isreg():
        return OutputFile(name, "special")
    stream = archive.extractfile(member)
    assert stream is not None
    found = _file_entry(stream, member.size, name, cap)
    assert found is not None  # tarfile raises on an archive cut short
    return found


def _file_entry(stream: IO[bytes], size: int, name: str, cap: int) -> OutputFile | None:
    """A regular file of ``size`` bytes, read from its archive member or from the host: hashed,
    and held when at most ``cap``; None when fewer bytes came (a file that shrank meanwhile,
    on the host: the engine's archive then tells what it is)."""
    entry = OutputFile(name, "file", size=size)
    if size > OUTPUT_SKIP:
        return entry  # neither held nor hashed (sha256 None), and the stream is closed unread
    digest = hashlib.sha256()
    kept = bytearray() if size <= cap else None
    read = 0
    for chunk in _chunks(stream, size):
        read += len(chunk)
        digest.update(chunk)
        if kept is not None:
            kept += chunk
    if read < size:
        return None
    entry.sha256 = digest.hexdigest()
    entry.content = bytes(kept) if kept is not None else None
    return entry
