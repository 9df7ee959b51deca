"""Image references, registry credentials, and pulls through the Docker engine."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import docker
import docker.errors
import requests
import urllib3.exceptions

from ..errors import SetupError
from ..options import PASSWORD_ENV, Credentials
from ..runtime import Progress

DOCKER_HUB = "docker.io"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:localhost|\[[0-9a-fA-F:]+\]|(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")


@dataclass(frozen=True)
class Reference:
    """An image reference split the way the platform reports it (SPEC.md section 1).

    ``registryHost`` is the registry's host[:port] (docker.io when none is named);
    ``repositoryNamespace`` every path component but the last (``library`` for Docker
    Hub's official images); ``repositoryName`` the last one; ``imagePrefix`` where the
    image is stored: ``registryHost/repositoryNamespace``.
    """

    text: str
    registry_host: str
    namespace: str
    name: str
    tag: str | None
    digest: str | None
    explicit_registry: bool  # the reference names its registry (rather than Docker Hub by default)

    @property
    def image_prefix(self) -> str:
        return f"{self.registry_host}/{self.namespace}" if self.namespace else self.registry_host

    def report_fields(self) -> dict[str, str]:
        return {
            "registryHost": self.registry_host,
            "repositoryNamespace": self.namespace,
            "imagePrefix": self.image_prefix,
            "repositoryName": self.name,
        }


def parse_reference(text: str) -> Reference:
    """Split ``[host[:port]/]path/name[:tag][@digest]``; a malformed one is a SetupError."""

    def malformed(why: str) -> SetupError:
        return SetupError(f"malformed image reference {text!r}: {why}")

    if not text or text != text.strip():
        raise malformed("it is empty or has surrounding spaces")
    rest, _, digest_text = text.partition("@")
    digest = digest_text if "@" in text else None
    if digest is not None and not _DIGEST.match(digest):
        raise malformed(f"{digest!r} is not a digest such as sha256:<hex>")
    tag = None
    last_slash = rest.rfind("/")
    if ":" in rest[last_slash + 1 :]:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise malformed(f"{tag!r} is not a valid tag")
    parts = rest.split("/")
    explicit = len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost")
    host = parts.pop(0) if explicit else DOCKER_HUB
    if explicit and not _DOMAIN.match(host):
        raise malformed(f"{host!r} is not a registry host[:port]")
    for component in parts:
        if not _COMPONENT.match(component):
            raise malformed(f"{component!r} must be lowercase letters, digits and separators (. _ __ -)")
    if host == DOCKER_HUB and len(parts) == 1:
        parts.insert(0, "library")
    return Reference(text, host, "/".join(parts[:-1]), parts[-1], tag, digest, explicit)


ProgressCallback = Callable[[Progress], None]


class _LayerTally:
    def __init__(self) -> None:
        self.layers: dict[str, tuple[int, int]] = {}  # id -> (current, total)

    def update(self, event: dict[str, Any]) -> Progress:
        layer = event.get("id")
        status = str(event.get("status", ""))
        detail = event.get("progressDetail") or {}
        if layer and status == "Downloading" and detail.get("total"):
            self.layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        elif (
            layer
            and status in ("Download complete", "Pull complete", "Already exists")
            and layer in self.layers
        ):
            total = self.layers[layer][1]
            self.layers[layer] = (total, total)
        return Progress(sum(c for c, _ in self.layers.values()), sum(t for _, t in self.layers.values()))


def explain(reference: Reference, message: str, credentials: Credentials | None) -> str:
    lowered = message.lower()
    host = reference.registry_host
    if any(
        s in lowered
        for s in ("no basic auth credentials", "authentication required", "unauthorized", "denied")
    ):
        if credentials is not None:
            return f"the registry {host} refused the credentials of user {credentials.username!r}"
        return (
            f"the registry {host} needs credentials: give --registry-username with ${PASSWORD_ENV} "
            "or --registry-password-stdin, or `docker login` first"
        )
    if any(s in lowered for s in ("manifest unknown", "not found", "does not exist", "name unknown")):
        return f"{reference.text} was not found in the registry {host}"
    if any(
        s in lowered
        for s in (
            "connection refused",
            "no such host",
            "i/o timeout",
            "dial tcp",
            "network is unreachable",
            "tls",
        )
    ):
        detail = message.rsplit(": ", 1)[-1]
        return f"the registry {host} is unreachable ({detail})"
    return f"pulling {reference.text} failed: {message.splitlines()[0] if message else 'no reason given'}"


def pull(
    client: docker.DockerClient,
    reference: Reference,
    credentials: Credentials | None,
    progress: ProgressCallback | None = None,
) -> Progress:
    """Pull through the engine; credentials given, or else the user's Docker configuration."""
    tally = _LayerTally()
    seen = Progress()
    auth = credentials.auth_config() if credentials else None  # None: the SDK reads ~/.docker/config.json
    try:
        events: Iterable[dict[str, Any]] = client.api.pull(
            reference.text, stream=True, decode=True, auth_config=auth
        )
        for event in events:
            if "error" in event:
                raise SetupError(_redacted(explain(reference, str(event["error"]), credentials), credentials))
            seen = tally.update(event)
            if progress is not None:
                progress(seen)
    except docker.errors.APIError as exc:
        message = str(exc.explanation or exc)
        raise SetupError(_redacted(explain(reference, message, credentials), credentials)) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        # The engine's connection dropped or stalled; the message is ours, so no secret in it.
        raise SetupError(f"pulling {reference.text} failed: {type(exc).__name__}") from None
    seen.finished = True
    if progress is not None:
        progress(seen)
    return seen


def _redacted(text: str, credentials: Credentials | None) -> str:
    return credentials.redact(text) if credentials else text


class CountingReader:
    """A file object for a streamed upload that reports how much of it has been read."""

    def __init__(
        self, stream: BinaryIO, size: int, progress: ProgressCallback | None, interval: float = 0.5
    ) -> None:
        self._stream = stream
        self._progress = progress
        self._interval = interval
        self._last = 0.0
        self.seen = Progress(0, size)

    def __len__(self) -> int:  # lets requests send a Content-Length instead of chunking
        return self.seen.total

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.seen.done += len(chunk)
        now = time.monotonic()
        if self._progress is not None and (now - self._last >= self._interval or not chunk):
            self._last = now
            self._progress(self.seen)
        return chunk
