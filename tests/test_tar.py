"""Image archives (``--model-tar``): judged on what they hold, marked before they are loaded.

The unit tests build small ``docker save`` archives of their own and drive ``TarSource``
with a fake engine that records the calls; the others run the harness on archives made
from the sample's (tests/runs.py).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from harness.dockerengine import images
from harness.dockerengine.sources import TarSource, reap_loaded
from harness.errors import SetupError
from harness.observe import Observation
from harness.options import RunOptions
from tests import runs
from tests.harness_api import EXIT_NOT_EVALUATED, LABEL, LOADED_IMAGE_LABEL, OWNER_LABEL, owner_token
from tests.harness_runs import HarnessRuns, Result

# -- archives of our own ---------------------------------------------------------------------------


def _layer(text: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as layer:
        data = text.encode()
        info = tarfile.TarInfo("weights.bin")
        info.size = len(data)
        layer.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_archive(
    target: Path,
    *,
    oci: bool = False,
    gzip_layers: bool = False,
    repeated_as_link: bool = False,
    prefix: str = "",
    damage: str | None = None,
) -> str:
    """A `docker save` archive of a two-layer image (legacy layout, or OCI blobs); its id."""
    layers = [_layer("base"), _layer("model")]
    if repeated_as_link:
        layers.append(layers[0])
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(x)}" for x in layers]}}
    ).encode()
    if damage == "deep-config":
        config = b"[" * 100_000 + b"]" * 100_000  # named by its own digest, as a forger would
    stored = [gzip.compress(x, mtime=0) if gzip_layers else x for x in layers]
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    names = []
    for number, blob in enumerate(stored):
        name = f"blobs/sha256/{_sha(blob)}" if oci else f"{_sha(layers[number] + bytes([number]))}/layer.tar"
        if repeated_as_link and number == len(stored) - 1:
            links[name] = f"../{names[0]}"
        else:
            files[name] = blob
        names.append(name)
    config_name = f"blobs/sha256/{_sha(config)}" if oci else f"{_sha(config)}.json"
    files[config_name] = config
    if damage == "layer":
        files[names[1]] = _layer("other")
    if damage == "config":
        files[config_name] = config.replace(b"layers", b"Layers")
    if damage == "missing-layer":
        del files[names[0]]
    manifest = [{"Config": config_name, "RepoTags": ["psc-test/own:1"], "Layers": names}]
    if damage == "layer-count":
        manifest[0]["Layers"] = names[:1]
    files["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(target, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, link in links.items():
            info = tarfile.TarInfo(prefix + name)
            info.type = tarfile.SYMTYPE
            info.linkname = link
            archive.addfile(info)
    return f"sha256:{_sha(config)}"


@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"oci": True},
        {"oci": True, "gzip_layers": True},
        {"repeated_as_link": True},
        {"prefix": "./"},
    ],
    ids=["legacy", "oci", "oci-gzip-layers", "repeated-layer-as-link", "dot-slash-names"],
)
def test_a_whole_archive_is_accepted(tmp_path: Path, layout: dict[str, Any]) -> None:
    path = tmp_path / "model.tar"
    image_id = make_archive(path, **layout)
    manifest = images.read_tar_manifest(path)
    assert manifest.image_ids == (image_id,)
    seen: list[images.Progress] = []
    images.verify_tar(manifest, seen.append)
    assert seen and seen[-1].finished


def test_a_compressed_archive_is_checked_through_the_decompression(tmp_path: Path) -> None:
    plain = tmp_path / "model.tar"
    make_archive(plain)
    packed = tmp_path / "model.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    images.verify_tar(images.read_tar_manifest(packed))
    make_archive(plain, damage="layer")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(SetupError, match="layer 2 of 2"):
        images.verify_tar(images.read_tar_manifest(packed))


@pytest.mark.parametrize(
    ("damage", "oci", "message"),
    [
        (
            "missing-layer",
            False,
            "is not a complete image archive: its manifest.json names *, which it does not hold",
        ),
        ("layer", False, "is damaged or not what its manifest.json says: layer 2 of 2 (*) does not match *"),
        (
            "layer",
            True,
            "is damaged or not what its manifest.json says: blobs/sha256/* does not hash to its name",
        ),
        (
            "config",
            False,
            "is damaged or not what its manifest.json says: its image config * does not hash to the id *",
        ),
        (
            "deep-config",
            False,
            "is damaged or not what its manifest.json says: its image config has no rootfs.diff_ids",
        ),
        (
            "layer-count",
            False,
            "is damaged or not what its manifest.json says: it lists 1 layers, the image config 2",
        ),
    ],
)
def test_a_damaged_archive_is_refused_in_one_line(
    tmp_path: Path, damage: str, oci: bool, message: str
) -> None:
    path = tmp_path / "model.tar"
    make_archive(path, oci=oci, damage=damage)
    with pytest.raises(SetupError) as caught:
        images.verify_tar(images.read_tar_manifest(path))
    assert fnmatch.fnmatch(str(caught.value), f"{path} {message}"), caught.value


def test_paths_that_are_not_archive_files_say_what_they_are(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cases = {
        fifo: "is not a regular file (a pipe or device cannot be read twice): save it to a file first",
        Path(
            "/dev/null"
        ): "is not a regular file (a pipe or device cannot be read twice): save it to a file first",
        tmp_path: "is a directory: give the file `docker save` wrote",
        tmp_path / "gone.tar": "does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(SetupError) as caught:
            images.read_tar_manifest(path)
        assert str(caught.value) == f"the image archive {path} {message}"


# -- the order of marking and loading, with a fake engine ------------------------------------------------


class FakeEngine:
    """Just what ``TarSource`` asks of a docker client; every call in ``calls``."""

    def __init__(self, image_id: str, present: bool = False, load_error: str | None = None) -> None:
        self.image_id = image_id
        self.present = present
        self.load_error = load_error
        self.volumes_made: dict[str, dict[str, str]] = {}
        self.created: dict[str, str] = {}
        self.calls: list[str] = []
        self.images = _Images(self)
        self.volumes = _Volumes(self)
        self.api = _Api(self)


class _Image:
    def __init__(self, image_id: str) -> None:
        self.id = image_id
        self.attrs = {"Id": image_id, "RepoTags": [], "Size": 1, "Config": {}}


class _Images:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get(self, ref: str) -> _Image:
        self.engine.calls.append("images.get")
        if ref != self.engine.image_id or not self.engine.present:
            raise docker.errors.ImageNotFound(ref)
        return _Image(ref)

    def remove(self, ref: str, force: bool = False) -> None:
        self.engine.calls.append("images.remove")
        if not self.engine.present:
            raise docker.errors.ImageNotFound(ref)
        self.engine.present = False


class _Volume:
    def __init__(self, engine: FakeEngine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.attrs = {"Labels": engine.volumes_made[name], "CreatedAt": engine.created[name]}

    def remove(self, force: bool = False) -> None:
        self.engine.calls.append("volume.remove")
        del self.engine.volumes_made[self.name]
        del self.engine.created[self.name]


class _Volumes:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def create(self, name: str, labels: dict[str, str], created: str = "") -> None:
        self.engine.calls.append("volumes.create")
        self.engine.volumes_made[name] = labels
        self.engine.created[name] = created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def list(self, filters: dict[str, str]) -> list[_Volume]:
        key, has_value, value = filters["label"].partition("=")
        made = self.engine.volumes_made
        return [
            _Volume(self.engine, n)
            for n, labels in made.items()
            if key in labels and (not has_value or labels[key] == value)
        ]

    def get(self, name: str) -> _Volume:
        if name not in self.engine.volumes_made:
            raise docker.errors.NotFound(name)
        return _Volume(self.engine, name)


class _Api:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def load_image(self, data: Any) -> Iterator[dict[str, str]]:
        self.engine.calls.append("api.load_image")
        while data.read(1 << 16):
            pass
        if self.engine.load_error is not None:
            yield {"error": self.engine.load_error}
            return
        self.engine.present = True
        yield {"stream": "Loaded image"}


def _bring_in(path: Path, engine: FakeEngine) -> TarSource:
    source = TarSource(path, RunOptions(), "s" * 12)
    assert source.error is None, source.error
    source.bring_in(engine, Observation("x", str(path), "tar"), None)  # type: ignore[arg-type]
    return source


def test_the_mark_is_made_before_the_load_and_removed_with_the_image(tmp_path: Path) -> None:
    path = tmp_path / "model.tar"
    engine = FakeEngine(make_archive(path))
    source = _bring_in(path, engine)
    assert engine.calls.index("volumes.create") < engine.calls.index("api.load_image"), engine.calls
    (labels,) = engine.volumes_made.values()
    assert labels[LOADED_IMAGE_LABEL] == engine.image_id
    source.cleanup(engine)  # type: ignore[arg-type]
    assert engine.volumes_made == {} and not engine.present


def test_a_failed_load_leaves_its_mark_for_cleanup_only(tmp_path: Path) -> None:
    path = tmp_path / "model.tar"
    engine = FakeEngine(make_archive(path), load_error="unexpected EOF")
    source = TarSource(path, RunOptions(), "s" * 12)
    with pytest.raises(SetupError, match="unexpected EOF"):
        source.bring_in(engine, Observation("x", str(path), "tar"), None)  # type: ignore[arg-type]
    assert engine.calls.index("volumes.create") < engine.calls.index("api.load_image")
    assert len(engine.volumes_made) == 1  # until cleanup: a kill now leaves it to the next run's reaper
    source.cleanup(engine)  # type: ignore[arg-type]
    assert engine.volumes_made == {}


def test_the_users_image_is_used_unmarked_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "model.tar"
    engine = FakeEngine(make_archive(path), present=True)
    source = _bring_in(path, engine)
    assert "volumes.create" not in engine.calls and "api.load_image" not in engine.calls
    source.cleanup(engine)  # type: ignore[arg-type]
    assert engine.present and "images.remove" not in engine.calls


@pytest.mark.parametrize("present", [True, False], ids=["image-in-the-engine", "image-absent"])
def test_a_damaged_archive_is_refused_before_anything_is_marked_or_loaded(
    tmp_path: Path, present: bool
) -> None:
    path = tmp_path / "model.tar"
    engine = FakeEngine(make_archive(path, damage="layer"), present=present)
    with pytest.raises(SetupError, match="layer 2 of 2"):
        _bring_in(path, engine)
    assert "volumes.create" not in engine.calls and "api.load_image" not in engine.calls
    assert engine.present == present


def _dead_mark(engine: FakeEngine, created: str = "") -> str:
    """The mark a run killed outright left: its owner's start ticks are not this process's."""
    name = "psc-harness-load-dead"
    owner = owner_token().rsplit("/", 1)[0] + "/1"
    labels = {LABEL: "1", OWNER_LABEL: owner, LOADED_IMAGE_LABEL: engine.image_id}
    engine.volumes.create(name=name, labels=labels, created=created)
    return name


def test_a_killed_runs_mark_waits_for_an_image_the_engine_is_still_loading(tmp_path: Path) -> None:
    engine = FakeEngine(make_archive(tmp_path / "model.tar"))
    mark = _dead_mark(engine)
    assert reap_loaded(engine) == []  # type: ignore[arg-type]
    assert mark in engine.volumes_made, "the mark went before the image it was to reap"
    engine.present = True  # the engine finished the killed run's load
    assert reap_loaded(engine) == [f"volume {mark}", f"image {engine.image_id[:19]}"]  # type: ignore[arg-type]
    assert engine.volumes_made == {} and not engine.present


def test_a_killed_runs_mark_without_its_image_goes_after_the_grace(tmp_path: Path) -> None:
    engine = FakeEngine(make_archive(tmp_path / "model.tar"))
    mark = _dead_mark(engine, created="2026-01-01T00:00:00.123456789Z")
    assert reap_loaded(engine) == [f"volume {mark}"]  # type: ignore[arg-type]
    assert engine.volumes_made == {}


def test_a_killed_runs_waiting_mark_keeps_no_image_alive(tmp_path: Path) -> None:
    path = tmp_path / "model.tar"
    engine = FakeEngine(make_archive(path))
    _dead_mark(engine)
    source = _bring_in(path, engine)
    source.cleanup(engine)  # type: ignore[arg-type]
    assert not engine.present, "the image this run loaded was kept for a mark whose owner is gone"


# -- real runs ----------------------------------------------------------------------------------------


def _one_line(result: Result, pattern: str) -> str:
    lines = result.harness_lines()
    assert len(lines) == 1, result
    assert fnmatch.fnmatch(lines[0], pattern), lines[0]
    assert "Traceback" not in result.output, result
    return lines[0]


INCOMPLETE = "is not a complete image archive: its manifest.json names"
DAMAGED = "is damaged or not what its manifest.json says:"
DAMAGE_MESSAGES = {
    "manifest-only": f"{INCOMPLETE} *.json, which it does not hold",
    "no-base-layer": f"{INCOMPLETE} */layer.tar, which it does not hold",
    "tampered-layer": f"{DAMAGED} layer 2 of 7 (*/layer.tar) does not match*",
    "forged-config": f"{DAMAGED} its image config * does not hash to the id*",
}


@pytest.mark.docker
@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.harness(runs.DAMAGED_TARS[k])) for k in sorted(runs.DAMAGED_TARS)],
)
def test_an_archive_is_judged_on_what_it_holds_not_on_the_engines_image(
    harness: HarnessRuns, kind: str
) -> None:
    # The sample's own image is in the engine under the id the archive names: it must not be
    # judged in the archive's place, nor be removed.
    result = harness(runs.DAMAGED_TARS[kind])
    assert result.facts["present_before"], "the sample image was not in the engine: this proves nothing"
    assert result.returncode == EXIT_NOT_EVALUATED, result
    _one_line(result, f"harness: {result.cwd / 'model.tar'} {DAMAGE_MESSAGES[kind]}")
    assert result.json["verdict"] == "error"
    assert result.with_outcome("passed", "failed") == set()
    # Found when the run began (a member missing) or while uploading (a digest): never uploaded.
    steps = result.json["loadSteps"]
    assert all(step["details"].get("uploadPercentage") != 100 for step in steps), steps
    assert result.containers == []
    assert result.facts["present_after"], "the run removed an image it did not bring"


@pytest.mark.docker
@pytest.mark.harness(runs.GZIPPED_TAR)
def test_a_compressed_archive_is_checked_loaded_and_removed(harness: HarnessRuns) -> None:
    result = harness(runs.GZIPPED_TAR)
    assert result.json["image"]["source"] == "tar"
    assert result.json["image"]["id"] == result.facts["image_id"], result
    assert not any("damaged" in line or "complete" in line for line in result.harness_lines()), result
    assert not result.facts["present_after"], "the image loaded from the archive is still in the engine"


@pytest.mark.docker
@pytest.mark.harness(runs.TAR_STDIN, runs.TAR_DIRECTORY)
def test_a_pipe_or_a_directory_is_no_archive(harness: HarnessRuns) -> None:
    piped = harness(runs.TAR_STDIN)
    assert piped.returncode == EXIT_NOT_EVALUATED, piped
    _one_line(
        piped,
        "harness: the image archive /dev/stdin is not a regular file "
        "(a pipe or device cannot be read twice): save it to a file first",
    )
    directory = harness(runs.TAR_DIRECTORY)
    assert directory.returncode == EXIT_NOT_EVALUATED, directory
    _one_line(
        directory,
        f"harness: the image archive {directory.cwd} is a directory: give the file `docker save` wrote",
    )


@pytest.mark.docker
@pytest.mark.harness(runs.KILLED_LOADING_TAR)
def test_a_run_killed_once_its_archive_is_loaded_has_marked_it_for_the_next(harness: HarnessRuns) -> None:
    outcome = harness(runs.KILLED_LOADING_TAR)
    killed = outcome["killed"]
    assert killed.returncode == -9, killed
    # The mark was made before the load: it is there as soon as the image is.
    assert len(killed.facts["marks_when_loaded"]) == 1, killed.facts
    assert killed.facts["marks_after_kill"] == killed.facts["marks_when_loaded"]
    assert killed.facts["loaded_after_kill"]
    assert outcome["next"].returncode != EXIT_NOT_EVALUATED, outcome["next"]
    assert killed.facts["marks_left"] == [] and not killed.facts["image_left"], killed.facts
