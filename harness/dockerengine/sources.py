"""Image sources: where the image under test comes from, behind one interface.

A source is checked early (a malformed reference or unreadable TAR is found before any
check runs), brings its image into the engine, describes itself for the report, and
removes what it brought in. Nothing else in the harness asks what kind of source it has.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import docker
import docker.errors
from docker.models.volumes import Volume

from ..errors import SetupError
from ..labels import LABEL, LOADED_IMAGE_LABEL, OWNER_LABEL, owner_gone
from ..observe import Observation
from ..options import RunOptions
from ..runtime import PreparedImage, Progress, ProgressLine, SourceKind
from ..units import parse_engine_time
from . import images, registry

LOAD_GRACE = 600.0  # s: how long an engine may go on loading the archive of a run killed meanwhile


class ImageSource(Protocol):
    label: str  # how the image is named in check ids and reports
    reference: str  # as the user gave it
    source: SourceKind  # what the report calls it
    error: str | None  # what makes this source impossible to evaluate, found early

    def bring_in(
        self, client: docker.DockerClient, observed: Observation, progress: ProgressLine | None
    ) -> PreparedImage: ...

    def cleanup(self, client: docker.DockerClient) -> None: ...


def _progress_to(show: ProgressLine | None, what: str) -> Callable[[Progress], None] | None:
    if show is None:
        return None
    return lambda seen: show(what, seen)


class ReferenceSource:
    """An image named by reference: in the engine already, or pulled as the pull policy says."""

    def __init__(self, text: str, options: RunOptions) -> None:
        self.reference = self.label = text
        self.options = options
        self.source = SourceKind.TAG
        self.error: str | None = None
        self.parsed: registry.Reference | None = None
        self._pulled: list[str] = []
        try:
            self.parsed = registry.parse_reference(text)
        except SetupError as exc:
            self.error = str(exc)
        if self.parsed is not None and self.parsed.explicit_registry:
            self.source = SourceKind.REGISTRY

    def bring_in(
        self, client: docker.DockerClient, observed: Observation, progress: ProgressLine | None
    ) -> PreparedImage:
        assert self.parsed is not None
        reference = self.parsed
        if reference.explicit_registry:
            observed.registry_fields = reference.report_fields()
        not_here: SetupError | None = None
        if self.options.pull != "always":
            try:
                image = images.from_tag(client, reference.text)
                self.source = SourceKind.TAG
                return image
            except SetupError as exc:
                if self.options.pull == "never":
                    raise
                not_here = exc
        self.source = SourceKind.REGISTRY
        observed.registry_fields = reference.report_fields()
        if not images.image_present(client, reference.text):
            self._pulled.append(reference.text)  # before pulling: a pull cut short is removed too
        try:
            pulled = registry.pull(
                client,
                reference,
                self.options.credentials,
                _progress_to(progress, f"pulling {reference.text}"),
            )
        except SetupError as exc:
            if reference.explicit_registry or self.options.pull == "always":
                raise
            # Most likely a local tag mistyped, rather than an image meant to come from Docker Hub.
            raise SetupError(f"{not_here}; pulling it from Docker Hub failed too: {exc}") from None
        observed.upload_bytes = pulled.total
        image = images.from_tag(client, reference.text)
        image.source = SourceKind.REGISTRY
        return image

    def cleanup(self, client: docker.DockerClient) -> None:
        if not self.options.keep_image:
            for ref in self._pulled:
                images.untag(client, ref)
        self._pulled = []


class TarSource:
    """A ``docker save`` archive, streamed into the engine.

    While a run uses an image it loaded, a small labelled volume marks it as that run's:
    the image is removed when the last run that marked it is done, or by the next run
    after its owner was killed; an image that was in the engine before, unmarked, is the
    user's and stays.
    """

    def __init__(self, path: Path, options: RunOptions, session_id: str) -> None:
        self.path = path
        self.reference = str(path)
        self.label = path.name
        self.source = SourceKind.TAR
        self.options = options
        self.session_id = session_id
        self.error: str | None = None
        self.manifest: images.TarManifest | None = None
        self._marker: str | None = None
        try:
            self.manifest = images.read_tar_manifest(path)
        except SetupError as exc:
            self.error = str(exc)

    def bring_in(
        self, client: docker.DockerClient, observed: Observation, progress: ProgressLine | None
    ) -> PreparedImage:
        assert self.manifest is not None
        manifest = self.manifest
        observed.upload_bytes = manifest.size
        if len(manifest.image_ids) != 1:
            return images.load_tar(client, manifest)  # refuses it, naming the images
        (image_id,) = manifest.image_ids
        # The verdict is on what the archive holds, as the platform loads it: not on an image
        # of the same id the engine happens to hold (which `docker load` would not re-check).
        images.verify_tar(manifest, _progress_to(progress, f"checking {self.path.name}"))
        if images.image_present(client, image_id) and not _other_marks(client, image_id, None):
            return images.from_tag(client, image_id)  # the user's own image: used as it is, never removed
        # Marked before it is loaded (its id is known from the archive): a run killed at any
        # moment of the load leaves a mark for the next run to reap the image by.
        self._marker = _mark(client, image_id, self.session_id)
        return images.load_tar(client, manifest, _progress_to(progress, f"loading {self.path.name}"))

    def _unmark(self, client: docker.DockerClient) -> None:
        if self._marker is not None:
            with contextlib.suppress(docker.errors.NotFound):
                client.volumes.get(self._marker).remove(force=True)
            self._marker = None

    def cleanup(self, client: docker.DockerClient) -> None:
        if self._marker is None or self.manifest is None:
            return
        (image_id,) = self.manifest.image_ids
        marker = self._marker
        self._unmark(client)
        # A killed run's mark may wait for its image (see reap_loaded): it keeps nothing alive.
        if not self.options.keep_image and not _other_marks(client, image_id, marker, live_only=True):
            _remove_image(client, image_id)


def _mark(client: docker.DockerClient, image_id: str, session_id: str) -> str:
    from ..labels import labels

    name = f"psc-harness-load-{session_id}-{image_id.removeprefix('sha256:')[:12]}"
    client.volumes.create(name=name, labels={**labels(session_id), LOADED_IMAGE_LABEL: image_id})
    return name


def _other_marks(
    client: docker.DockerClient, image_id: str, own: str | None, live_only: bool = False
) -> list[str]:
    found = client.volumes.list(filters={"label": f"{LOADED_IMAGE_LABEL}={image_id}"})
    return [
        v.name
        for v in found
        if v.name != own
        and not (live_only and owner_gone((v.attrs.get("Labels") or {}).get(OWNER_LABEL, "")))
    ]


def _age(volume: Volume) -> float | None:
    """Seconds since the engine created the volume; None when it does not say."""
    created = parse_engine_time(volume.attrs.get("CreatedAt"))
    return None if created is None else time.time() - created


def _remove_image(client: docker.DockerClient, image_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.images.remove(image_id, force=True)


def reap_loaded(client: docker.DockerClient) -> list[str]:
    """Remove the marks, and then the images, of runs that were killed while they held them."""
    removed: list[str] = []
    for volume in client.volumes.list(filters={"label": LOADED_IMAGE_LABEL}):
        labels = volume.attrs.get("Labels") or {}
        if LABEL not in labels or not owner_gone(labels.get(OWNER_LABEL, "")):
            continue
        image_id = labels[LOADED_IMAGE_LABEL]
        age = _age(volume)
        if not images.image_present(client, image_id) and age is not None and age < LOAD_GRACE:
            # Killed once its upload was sent, the engine may still be loading it: the mark
            # stays until the image is there (reaped then) or the grace is over.
            continue
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
        if not _other_marks(client, image_id, None):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image_id, force=True)
                removed.append(f"image {image_id[:19]}")
    return removed
