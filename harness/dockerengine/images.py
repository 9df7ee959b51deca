"""Where the image under test comes from: a tag in the engine or a ``docker save`` TAR."""

from __future__ import annotations

import bz2
import contextlib
import difflib
import gzip
import hashlib
import io
import json
import lzma
import posixpath
import re
import stat
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.models.containers import Container

from ..errors import SetupError
from ..metadata import MODEL_YAML_MAX
from ..runtime import PreparedImage, Progress, SourceKind
from .registry import CountingReader, ProgressCallback

MODEL_YAML = "model.yaml"
FALLBACK_APP_DIR = "/opt/app"


def connect(timeout: float = 30.0) -> docker.DockerClient:
    """A client for the engine of the environment (DOCKER_HOST, or the local socket)."""
    try:
        client = docker.from_env(version="auto", timeout=int(timeout))
    except docker.errors.DockerException as exc:
        raise SetupError(f"cannot reach the Docker engine: {reason(exc)}") from None
    return client


def reason(exc: BaseException) -> str:
    """Why the engine could not be reached, for a person: by the OS error at the root of the
    SDK's wrapped exceptions, not by their text."""
    root = _os_error(exc)
    if isinstance(root, PermissionError):
        return "permission denied on the Docker socket (is this user in the docker group?)"
    if isinstance(root, (FileNotFoundError, ConnectionRefusedError)):
        return "no engine answers (is the Docker daemon running? is DOCKER_HOST right?)"
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _os_error(exc: BaseException, depth: int = 0) -> OSError | None:
    """The OS error an exception was caused by: the docker SDK wraps requests' wrapping of
    urllib3's, which keeps the OSError among its arguments."""
    if isinstance(exc, OSError) and type(exc).__module__ == "builtins":
        return exc
    if depth > 8:
        return None
    linked = [exc.__cause__, exc.__context__, *(a for a in exc.args if isinstance(a, BaseException))]
    # urllib3's NewConnectionError keeps its OSError as the cause only.
    for found in (_os_error(e, depth + 1) for e in linked if e is not None):
        if found is not None:
            return found
    return None


ARCHIVE_MEMBERS_MAX = 10_000  # `docker save` writes a few per layer, and an image has at most ~128
MANIFEST_MAX = 2**20
CONFIG_MAX = 8 * 2**20
CHUNK = 2**20
LINKS_MAX = 8
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BLOB = re.compile(r"blobs/sha256/([0-9a-f]{64})")


@dataclass(frozen=True)
class TarManifest:
    """What a ``docker save`` archive says it holds, read without loading it."""

    path: Path
    image_ids: tuple[str, ...]
    repo_tags: tuple[str, ...]
    size: int  # read when the run begins: the file may be gone by the time the report is written
    config: str = ""  # of a single image: the archive member holding its config...
    layers: tuple[str, ...] = ()  # ... and those holding its layers, in order (links resolved)


def _archive_file(path: Path) -> int:
    """The archive's size; a path that is not a regular file is refused, saying what it is."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SetupError(f"the image archive {path} does not exist") from None
    except OSError as exc:
        raise SetupError(f"the image archive {path} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise SetupError(f"the image archive {path} is a directory: give the file `docker save` wrote")
    if not stat.S_ISREG(mode):
        # It is read several times (its manifest, its check, the load): a stream would be gone.
        raise SetupError(
            f"the image archive {path} is not a regular file (a pipe or device cannot be read twice): "
            "save it to a file first"
        )
    size = path.stat().st_size
    if size == 0:
        raise SetupError(f"the image archive {path} is empty")
    return size


def _normal(name: str) -> str:
    """A member's name as `docker load` resolves it: "./x", "x" and "a/../x" are one file."""
    return posixpath.normpath("/" + name).lstrip("/")


def _members(archive: tarfile.TarFile, path: Path) -> dict[str, tarfile.TarInfo]:
    """Every member by its normalized name (the last of a name wins, as when extracting); bounded."""
    found: dict[str, tarfile.TarInfo] = {}
    for count, member in enumerate(iter(archive.next, None)):
        if count >= ARCHIVE_MEMBERS_MAX:
            raise SetupError(f"{path} has over {ARCHIVE_MEMBERS_MAX} entries: not a `docker save` archive")
        found[_normal(member.name)] = member
    return found


def _resolve(members: dict[str, tarfile.TarInfo], name: str, path: Path) -> str:
    """The regular member a name of manifest.json stands for, following links inside the archive."""
    current = _normal(name)
    for _ in range(LINKS_MAX):
        member = members.get(current)
        if member is None:
            raise SetupError(
                f"{path} is not a complete image archive: its manifest.json names {name}, "
                "which it does not hold"
            )
        if member.isfile():
            return current
        if member.issym():
            target = posixpath.join(posixpath.dirname(current), member.linkname)
        elif member.islnk():
            target = member.linkname
        else:
            raise SetupError(f"{path}: {name}, named in its manifest.json, is not a file")
        if member.linkname.startswith("/") or posixpath.normpath(target).startswith(".."):
            raise SetupError(f"{path}: {name}, named in its manifest.json, links out of the archive")
        current = _normal(target)
    raise SetupError(f"{path}: {name}, named in its manifest.json, is a chain of links")


def read_tar_manifest(path: Path) -> TarManifest:
    size = _archive_file(path)
    try:
        # "r:*": a compressed archive too (docker save | gzip), as docker load takes it; an
        # uncompressed one is read by seeking over member data, headers only.
        with tarfile.open(path, mode="r:*") as archive:
            members = _members(archive, path)
            member = members["manifest.json"]
            if not member.isfile() or member.size > MANIFEST_MAX:
                raise SetupError(f"{path} has a manifest.json that is not a file of at most 1 MiB")
            extracted = archive.extractfile(member)
            manifest = json.load(extracted) if extracted else None
    except KeyError:
        raise SetupError(f"{path} is not a docker image archive (it has no manifest.json)") from None
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise SetupError(f"{path} is not a readable docker image archive: {exc}") from None
    well_formed = isinstance(manifest, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("Config"), str)
        and isinstance(e.get("Layers") or [], list)
        and all(isinstance(layer, str) for layer in e.get("Layers") or [])
        for e in manifest
    )
    if not well_formed or not manifest:
        raise SetupError(f"{path} has an empty or malformed manifest.json")
    ids = tuple(
        "sha256:" + PurePosixPath(str(entry["Config"])).name.removesuffix(".json") for entry in manifest
    )
    tags = tuple(str(tag) for entry in manifest for tag in entry.get("RepoTags") or ())
    if len(manifest) != 1:
        return TarManifest(path, ids, tags, size)  # refused when loaded, naming the images
    (entry,) = manifest
    config = _resolve(members, entry["Config"], path)
    layers = tuple(_resolve(members, layer, path) for layer in entry.get("Layers") or [])
    return TarManifest(path, ids, tags, size, config, layers)


class _Region(io.RawIOBase):
    """A member's data, read straight from an uncompressed archive into the caller's buffer."""

    def __init__(self, stream: io.BufferedReader, offset: int, size: int) -> None:
        stream.seek(offset)
        self._stream = stream
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._left]
        if not view:
            return 0
        got = self._stream.readinto(view)
        if not got:
            raise tarfile.ReadError("unexpected end of data")
        self._left -= got
        return got


class _Extracted(io.RawIOBase):
    """A member's data from a compressed archive, as tarfile extracts it."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Hashing(io.RawIOBase):
    """Hashes what passes, and tells how far the check has gone."""

    def __init__(self, source: io.RawIOBase, seen: Progress, progress: ProgressCallback | None) -> None:
        self._source = source
        self._seen = seen
        self._progress = progress
        self._last = time.monotonic()
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        got = self._source.readinto(buffer) or 0
        self.sha.update(memoryview(buffer)[:got])
        self._seen.done += got
        if self._progress is not None and time.monotonic() - self._last >= 0.5:
            self._last = time.monotonic()
            self._progress(self._seen)
        return got


def _drain(stream: io.BufferedIOBase, buffer: bytearray) -> None:
    while stream.readinto(buffer):
        pass


def _digests(raw: _Hashing, layer: bool, name: str, path: Path) -> tuple[str, str]:
    """sha256 of a member as stored and of its content uncompressed, streamed."""
    buffer = bytearray(CHUNK)  # large reads go from the file straight into it
    stored = io.BufferedReader(raw, 2**16)
    head = stored.peek(6)[:6]
    opened: Callable[[IO[bytes]], io.BufferedIOBase] | None = None
    # Compressed as `docker load` takes a layer (OCI archives keep the registry's blobs).
    if layer and head.startswith(b"\x1f\x8b"):
        opened = lambda blob: gzip.GzipFile(fileobj=blob, mode="rb")  # noqa: E731
    elif layer and head.startswith(b"BZh"):
        opened = bz2.BZ2File
    elif layer and head.startswith(b"\xfd7zXZ\x00"):
        opened = lzma.LZMAFile
    elif layer and head.startswith(ZSTD_MAGIC):
        raise SetupError(
            f"{path}: layer {name} is zstd-compressed, which the harness cannot check; "
            "load it with `docker load` and give its tag with --model-image"
        )
    if opened is None:
        _drain(stored, buffer)
        return raw.sha.hexdigest(), raw.sha.hexdigest()
    plain = hashlib.sha256()
    try:
        with opened(stored) as content:
            while got := content.readinto(buffer):
                plain.update(memoryview(buffer)[:got])
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise SetupError(f"{path}: layer {name} cannot be decompressed: {exc}") from None
    _drain(stored, buffer)  # what may follow the compressed stream: part of the blob's digest
    return raw.sha.hexdigest(), plain.hexdigest()


def verify_tar(manifest: TarManifest, progress: ProgressCallback | None = None) -> None:
    """Check that the archive holds, byte for byte, the image its manifest names.

    The config must hash to the image id, each layer (uncompressed) to its config's
    ``rootfs.diff_ids``, and each ``blobs/sha256/<digest>`` to its name: what `docker load`
    checks of an image it does not hold yet. The engine skips what it holds already, so an
    archive missing a layer, or holding another image's, would pass there. Streamed, in
    chunks of 1 MiB; the config, at most 8 MiB, is read whole.
    """
    path = manifest.path
    (image_id,) = manifest.image_ids
    wanted = {manifest.config: False, **dict.fromkeys(manifest.layers, True)}
    digests: dict[str, tuple[str, str]] = {}
    config = b""
    try:
        with path.open("rb") as stream:
            # An uncompressed archive's members are read straight from the file; a compressed
            # one's (docker save | gzip) through tarfile.
            plain = not stream.peek(6)[:6].startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))
            with tarfile.open(fileobj=stream, mode="r:" if plain else "r:*") as archive:
                members = _members(archive, path)  # again: the file may have changed since
                missing = [name for name in wanted if name not in members or not members[name].isfile()]
                if missing:
                    raise SetupError(f"{path} is not a complete image archive: {missing[0]} is missing")
                seen = Progress(0, sum(members[name].size for name in wanted))
                # In the archive's order: a compressed one is decompressed once more, forward.
                for name in sorted(wanted, key=lambda n: members[n].offset_data):
                    member = members[name]
                    if name == manifest.config and member.size > CONFIG_MAX:
                        raise SetupError(f"{path}: the image config {name} is over 8 MiB")
                    if plain:
                        source: io.RawIOBase = _Region(stream, member.offset_data, member.size)
                    else:
                        extracted = archive.extractfile(member)
                        assert extracted is not None
                        source = _Extracted(extracted)
                    raw = _Hashing(source, seen, progress)
                    if name == manifest.config:
                        config = io.BufferedReader(raw).read()
                        digests[name] = (raw.sha.hexdigest(), raw.sha.hexdigest())
                    else:
                        digests[name] = _digests(raw, wanted[name], name, path)
                seen.finished = True
                if progress is not None:
                    progress(seen)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise SetupError(f"{path} is not a readable docker image archive: {exc}") from None
    damaged = f"{path} is damaged or not what its manifest.json says:"
    for name, (stored, _) in digests.items():
        blob = BLOB.fullmatch(name)
        if blob and blob[1] != stored:
            raise SetupError(f"{damaged} {name} does not hash to its name")
    if digests[manifest.config][0] != image_id.removeprefix("sha256:"):
        raise SetupError(f"{damaged} its image config {manifest.config} does not hash to the id {image_id}")
    try:
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    except (ValueError, TypeError, KeyError, RecursionError):  # any JSON at all: it hashes to its id
        diff_ids = None
    if not isinstance(diff_ids, list):
        raise SetupError(f"{damaged} its image config has no rootfs.diff_ids")
    if len(diff_ids) != len(manifest.layers):
        raise SetupError(
            f"{damaged} it lists {len(manifest.layers)} layers, the image config {len(diff_ids)}"
        )
    for number, (name, expected) in enumerate(zip(manifest.layers, diff_ids, strict=True), 1):
        if f"sha256:{digests[name][1]}" != expected:
            raise SetupError(
                f"{damaged} layer {number} of {len(diff_ids)} ({name}) does not match "
                f"the image config's digest {str(expected)[:19]}"
            )


def _prepared(client: docker.DockerClient, ref: str, source: SourceKind, image_id: str) -> PreparedImage:
    attrs = client.images.get(image_id).attrs
    return PreparedImage(
        ref=ref,
        source=source,
        image_id=str(attrs["Id"]),
        tags=tuple(attrs.get("RepoTags") or ()),
        size=int(attrs.get("Size") or 0),
        config=dict(attrs.get("Config") or {}),
        digest=next(iter(attrs.get("RepoDigests") or ()), None),
    )


def from_tag(client: docker.DockerClient, ref: str) -> PreparedImage:
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise SetupError(f"image {ref} is not in the Docker engine{_hint(client, ref)}") from None
    except docker.errors.APIError as exc:
        raise SetupError(f"cannot inspect image {ref}: {exc.explanation or exc}") from None
    return _prepared(client, ref, SourceKind.TAG, str(image.id))


def _hint(client: docker.DockerClient, ref: str) -> str:
    """What the user may have meant: the engine's nearest tags, and what a missing tag means."""
    try:
        # The summaries alone: inspecting each would race with images removed meanwhile.
        held = [tag for image in client.api.images() for tag in image.get("RepoTags") or ()]
    except docker.errors.APIError:
        held = []
    near = difflib.get_close_matches(ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest", held, n=3)
    hints = []
    if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
        hints.append(f"no tag means {ref}:latest")
    if near:
        hints.append(f"did you mean {', '.join(near)}?")
    else:
        hints.append("build or load it first")
    return f" ({'; '.join(hints)})"


def image_present(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return False
    return True


def load_tar(
    client: docker.DockerClient, manifest: TarManifest, progress: ProgressCallback | None = None
) -> PreparedImage:
    """Stream the archive into the engine (the caller decides who owns the image)."""
    if len(manifest.image_ids) != 1:
        listed = ", ".join(manifest.repo_tags or manifest.image_ids)
        raise SetupError(
            f"{manifest.path} holds {len(manifest.image_ids)} images ({listed}); "
            "load it with `docker load` and give one with --model-image"
        )
    (image_id,) = manifest.image_ids
    try:
        with manifest.path.open("rb") as stream:
            # A file object is sent in chunks: the archive is never read whole into memory.
            reader = CountingReader(stream, manifest.size, progress)
            for line in client.api.load_image(reader):
                if isinstance(line, dict) and line.get("error"):
                    raise SetupError(f"the engine could not load {manifest.path}: {line['error']}")
            reader.seen.finished = True
            if progress is not None:
                progress(reader.seen)
    except docker.errors.APIError as exc:
        raise SetupError(f"the engine could not load {manifest.path}: {exc.explanation or exc}") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise SetupError(f"loading {manifest.path} failed: {type(exc).__name__}: {exc}") from None
    if not image_present(client, image_id):
        raise SetupError(f"the engine did not load {image_id} from {manifest.path}")
    return _prepared(client, str(manifest.path), SourceKind.TAR, image_id)


def untag(client: docker.DockerClient, ref: str) -> None:
    """Remove a reference the harness pulled: the image goes with its last tag, stays if others use it."""
    with contextlib.suppress(docker.errors.NotFound):
        client.images.remove(ref)


def read_model_yaml(container: Container, image: PreparedImage) -> tuple[str, str] | None:
    """model.yaml from the image's working directory, then /opt/app: (text, where) or None.

    Read from a created, never started container: no code of the image runs for it.
    """
    candidates = [str(PurePosixPath(image.working_dir) / MODEL_YAML), f"{FALLBACK_APP_DIR}/{MODEL_YAML}"]
    for candidate in dict.fromkeys(candidates):
        text = _read_file(container, candidate)
        if text is not None:
            return text, f"{image.ref}:{candidate}"
    return None


def _read_file(container: Container, path: str, links: int = 5) -> str | None:
    """A text file's content from a container, following its links inside the container; None when absent.

    At most MODEL_YAML_MAX bytes: a larger model.yaml is refused rather than read.
    """
    try:
        chunks, _stat = container.get_archive(path)
        with tarfile.open(fileobj=_Chunks(iter(chunks)), mode="r|") as archive:
            member = archive.next()
            if member is not None and member.issym() and links > 0:
                target = PurePosixPath(path).parent / member.linkname
                return _read_file(container, str(target), links - 1)
            if member is None or not member.isfile():
                return None
            if member.size > MODEL_YAML_MAX:
                raise SetupError(f"{path} in the image is {member.size} bytes: a model.yaml is at most 1 MiB")
            extracted = archive.extractfile(member)
            return extracted.read().decode("utf-8", errors="replace") if extracted else None
    except docker.errors.NotFound:
        return None
    except (docker.errors.APIError, tarfile.TarError) as exc:
        raise SetupError(f"cannot read {path} from the image: {exc}") from None


class _Chunks(io.RawIOBase):
    """A file object over an iterator of byte chunks, read only as far as needed."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
