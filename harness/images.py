"""Where the image under test comes from: a tag in the engine or a ``docker save`` TAR."""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.models.containers import Container

from .errors import SetupError
from .registry import CountingReader, ProgressCallback

MODEL_YAML = "model.yaml"
MODEL_YAML_MAX = 2**20
FALLBACK_APP_DIR = "/opt/app"


def connect(timeout: float = 30.0) -> docker.DockerClient:
    """A client for the engine of the environment (DOCKER_HOST, or the local socket)."""
    try:
        client = docker.from_env(version="auto", timeout=int(timeout))
    except docker.errors.DockerException as exc:
        raise SetupError(f"cannot reach the Docker engine: {reason(exc)}") from None
    return client


def reason(exc: BaseException) -> str:
    text = str(exc)
    if "Permission denied" in text:
        return "permission denied on the Docker socket (is this user in the docker group?)"
    if "No such file" in text or "Connection refused" in text or "ConnectionRefused" in text:
        return "no engine answers (is the Docker daemon running? is DOCKER_HOST right?)"
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class TarManifest:
    """What a ``docker save`` archive says it holds, read without loading it."""

    path: Path
    image_ids: tuple[str, ...]
    repo_tags: tuple[str, ...]
    size: int  # read when the run begins: the file may be gone by the time the report is written


def read_tar_manifest(path: Path) -> TarManifest:
    if not path.is_file():
        raise SetupError(f"the image archive {path} does not exist")
    if path.stat().st_size == 0:
        raise SetupError(f"the image archive {path} is empty")
    try:
        # "r:*": a compressed archive too (docker save | gzip), as docker load takes it; an
        # uncompressed one is read by seeking over member data, headers only.
        with tarfile.open(path, mode="r:*") as archive:
            member = archive.getmember("manifest.json")
            extracted = archive.extractfile(member)
            manifest = json.load(extracted) if extracted else None
    except KeyError:
        raise SetupError(f"{path} is not a docker image archive (it has no manifest.json)") from None
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise SetupError(f"{path} is not a readable docker image archive: {exc}") from None
    well_formed = isinstance(manifest, list) and all(isinstance(e, dict) and "Config" in e for e in manifest)
    if not well_formed or not manifest:
        raise SetupError(f"{path} has an empty or malformed manifest.json")
    ids = tuple(
        "sha256:" + PurePosixPath(str(entry["Config"])).name.removesuffix(".json") for entry in manifest
    )
    tags = tuple(str(tag) for entry in manifest for tag in entry.get("RepoTags") or ())
    return TarManifest(path, ids, tags, path.stat().st_size)


@dataclass
class PreparedImage:
    ref: str  # what the user named: a tag or a TAR path
    source: str  # "tag" or "tar"
    image_id: str
    tags: tuple[str, ...]
    size: int
    config: dict[str, Any]
    digest: str | None = None

    @property
    def working_dir(self) -> str:
        return str(self.config.get("WorkingDir") or "/")


def _prepared(client: docker.DockerClient, ref: str, source: str, image_id: str) -> PreparedImage:
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
    return _prepared(client, ref, "tag", str(image.id))


def _hint(client: docker.DockerClient, ref: str) -> str:
    """What the user may have meant: the engine's nearest tags, and what a missing tag means."""
    try:
        held = [tag for image in client.images.list() for tag in image.tags]
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
    return _prepared(client, str(manifest.path), "tar", image_id)


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
