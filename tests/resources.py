"""What harness runs need besides the sample images, made on first use and removed at the end.

Everything here is this session's own: images are tagged ``psc-test/...:<session>`` and
labelled with the session's token, registry repositories live in a registry on a port of
its own, and cleanup removes exactly what was made (by id), never by a broad filter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from sample_models import build
from tests import engine
from tests.registry import Registry, push, running_registry

DATA = build.HERE / "langid" / "data"
TEST_LABEL = "org.psc-harness.test"  # on what the suite itself builds or starts: value = session token
REGISTRY_USER = "author"
REGISTRY_PASSWORD = "Reg1stry-S3cret-pw"

# Test-only images on top of the conformant sample, each with defects the samples lack.
# Each replacement must match exactly once in langid_app/server.py: a sample that changed
# shape fails the making of the image loudly instead of giving an image without its defect.
PATCHES: dict[str, dict[str, Any]] = {
    # Wrong statuses with the right JSON envelope: only the status is wrong; and an anonymous
    # volume, to see that it goes with the container after a failing run.
    "wrong-codes": {
        "replace": [
            [
                'raise JobError(415, "the job configuration must be a JSON body")',
                'raise JobError(400, "the job configuration must be a JSON body")',
            ],
            [
                "raise JobError(400, 'the job type must be \"file\"')",
                "raise JobError(422, 'the job type must be \"file\"')",
            ],
            [
                "raise JobError(400, f\"the input file '{name}' is missing from {input_dir}\")",
                "raise JobError(404, f\"the input file '{name}' is missing from {input_dir}\")",
            ],
            ['return envelope(202, "shutting down")', 'return envelope(200, "shutting down")'],
        ],
        "remove_model_yaml": False,
    },
    # The conformant model without the model.yaml it declares to the harness (the app reads
    # its own copy, langid.yaml), and an anonymous volume: default limits, and the volume
    # gone after a passing run.
    "no-model-yaml": {"replace": [], "remove_model_yaml": True},
}
PATCH_SCRIPT = """\
import json, os, pathlib, sys
path = pathlib.Path("/opt/app/langid_app/server.py")
text = path.read_text()
for old, new in json.loads(sys.argv[1]):
    if text.count(old) != 1:
        sys.exit(f"psc-test: {old!r} occurs {text.count(old)} times in {path}")
    text = text.replace(old, new)
path.write_text(text)
if sys.argv[2] == "remove":
    os.remove("/opt/app/model.yaml")
"""
ANONYMOUS_VOLUME = "/var/cache/psc-test"
GRPC_UNYAML = """\
import pathlib
app = pathlib.Path("/opt/app")
(app / "model.yaml").rename(app / "grpc_app" / "metadata.yaml")
serve = app / "grpc_app" / "serve.py"
text = serve.read_text()
assert text.count('APP_DIR / "model.yaml"') == 1
serve.write_text(text.replace('APP_DIR / "model.yaml"', 'APP_DIR / "grpc_app" / "metadata.yaml"'))
"""


class Resources:
    """Lazily made, thread-safe: several runs may ask for the same thing at once."""

    def __init__(self, root: Path, session: str) -> None:
        self.root = root
        self.session = session  # unique to this test session: tags, labels, repositories
        self.tag_suffix = session.replace(":", "-").replace("/", "-")
        self._made: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._stamp_lock = threading.Lock()
        self._cleanups: list[Callable[[], None]] = []
        self.image_ids: dict[str, str] = {}  # what the TAR resources hold, by name
        self.sample_ids: dict[str, str] = {}  # the samples built so far, by name

    def client(self) -> docker.DockerClient:
        return engine.client(timeout=300)

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._made:
                self._made[key] = make()
            return self._made[key]

    def on_close(self, cleanup: Callable[[], None]) -> None:
        with self._guard:
            self._cleanups.append(cleanup)

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()

    # -- placeholders in run arguments ---------------------------------------------------

    def placeholder(self, key: str) -> Any:
        makers: dict[str, Any] = {
            "data": lambda: str(DATA),
            "mini": lambda: str(self.mini_data()),
            "sample": lambda: _Lazy(self.sample),
            "registry": lambda: self.registry().host,
            "pushed": lambda: _Lazy(self.pushed),
            "fresh": lambda: _Lazy(self.fresh),
            "digest": lambda: _Lazy(self.digest_ref),
            "image": lambda: _Lazy(self.test_image),
            "tar": lambda: _Lazy(self.tar),
        }
        if key not in makers:
            raise KeyError(key)
        return makers[key]()

    def mini_data(self) -> Path:
        """The sample's data with one example and one validation-error case."""

        def make() -> Path:
            from tests.expect import MINI_EXAMPLE, MINI_VALIDATION_ERROR

            target = self.root / "mini-data"
            for kind, case in (("examples", MINI_EXAMPLE), ("validation-error", MINI_VALIDATION_ERROR)):
                shutil.copytree(DATA / kind / case, target / kind / case)
            return target

        return self._once("mini-data", make)  # type: ignore[no-any-return]

    # -- images ------------------------------------------------------------------------

    def sample(self, name: str) -> str:
        """A sample image, built once per session; the conformant one with its TAR. Returns
        its tag.

        Built through Docker's cache, unless the stamp of the last build says that the
        engine holds, under the sample's tag, what this very sample_models/ tree built: the
        engine is shared, and another checkout may have built other content under the tag.
        """

        def make() -> str:
            sample = build.Sample(name, "")
            client = self.client()
            with contextlib.closing(client):
                stamped = self._stamp().get(name)
                try:
                    current = str(client.images.get(sample.tag).id)
                except docker.errors.ImageNotFound:
                    current = None
                tar_ok = name != build.CONFORMANT.name or (
                    build.CONFORMANT_TAR.exists()
                    and build.CONFORMANT_TAR.with_suffix(".id").read_text() == current
                )
                if current is None or current != stamped or not tar_ok:
                    current = str(build.build_all(client, [name])[name].id)
                    self._stamp_update(name, current)
            self.sample_ids[name] = current
            return sample.tag

        return self._once(f"sample:{name}", make)  # type: ignore[no-any-return]

    STAMP = build.TAR_DIR / "psc-test-samples.json"

    def _context_hash(self) -> str:
        def make() -> str:
            digest = hashlib.sha256()
            for path in sorted(
                p for p in build.HERE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            ):
                digest.update(str(path.relative_to(build.HERE)).encode() + b"\0" + path.read_bytes())
            return digest.hexdigest()

        return self._once("context-hash", make)  # type: ignore[no-any-return]

    def _stamp(self) -> dict[str, str]:
        """name -> image id, as built from this sample_models/ tree (empty if it changed)."""
        try:
            stamp = json.loads(self.STAMP.read_text())
        except (OSError, ValueError):
            return {}
        return dict(stamp["ids"]) if stamp.get("context") == self._context_hash() else {}

    def _stamp_update(self, name: str, image_id: str) -> None:
        context = self._context_hash()
        with self._stamp_lock:
            ids = {**self._stamp(), name: image_id}
            self.STAMP.parent.mkdir(parents=True, exist_ok=True)
            partial = self.STAMP.with_suffix(f".{os.getpid()}.partial")
            partial.write_text(json.dumps({"context": context, "ids": ids}))
            partial.replace(self.STAMP)

    def test_image(self, name: str) -> str:
        """A patched copy of the conformant sample (see PATCHES), with an anonymous volume."""
        return self._once(f"image:{name}", lambda: self._patched(name))  # type: ignore[no-any-return]

    def _patched(self, name: str) -> str:
        if name == "grpc-no-model-yaml":
            return self._grpc_without_model_yaml()
        recipe = PATCHES[name]
        remove = "remove" if recipe["remove_model_yaml"] else "keep"
        command = ["python3", "-c", PATCH_SCRIPT, json.dumps(recipe["replace"]), remove]
        self.sample(build.CONFORMANT.name)
        client = self.client()
        with contextlib.closing(client):
            config = client.images.get(build.CONFORMANT.tag).attrs["Config"]
            restore = [f"CMD {json.dumps(config['Cmd'])}", f"VOLUME {ANONYMOUS_VOLUME}"]
            return self._commit(client, name, command, restore)

    def _grpc_without_model_yaml(self) -> str:
        """The gRPC sample as chassis builds images: no model.yaml where the harness looks; the
        server reads its metadata from a file of its own, and its Status answer holds it."""
        base = self.sample("grpc-langid") and build.Sample("grpc-langid", "").tag
        client = self.client()
        with contextlib.closing(client):
            config = client.images.get(base).attrs["Config"]
            restore = [f"CMD {json.dumps(config['Cmd'])}", f"WORKDIR {config.get('WorkingDir') or '/'}"]
            return self._commit(
                client, "grpc-no-model-yaml", ["python3", "-c", GRPC_UNYAML], restore, base=base
            )

    def _commit(
        self,
        client: docker.DockerClient,
        name: str,
        command: list[str] | None,
        changes: list[str],
        base: str = build.CONFORMANT.tag,
    ) -> str:
        """The conformant sample after ``command`` ran in it (none: as it is), committed with
        ``changes`` as ``psc-test/<name>:<session>``: faster than a build here."""
        labels = {TEST_LABEL: self.session}
        container = client.containers.create(base, command=command, labels=labels)
        try:
            if command is not None:
                container.start()
                code = container.wait(timeout=120)["StatusCode"]
                assert code == 0, container.logs().decode(errors="replace")
            image = container.commit(
                repository=f"psc-test/{name}",
                tag=self.tag_suffix,
                changes=[*changes, f"LABEL {TEST_LABEL}.image={name}-{self.tag_suffix}"],
            )
        finally:
            container.remove(force=True, v=True)
        self.on_close(lambda: self._remove_image(str(image.id)))
        return f"psc-test/{name}:{self.tag_suffix}"

    def _build(self, context: Path, tag: str) -> str:
        client = self.client()
        try:
            image, _ = client.images.build(
                path=str(context),
                tag=tag,
                labels={TEST_LABEL: self.session},
                pull=False,
                rm=True,
                forcerm=True,
            )
        finally:
            client.close()
        self.on_close(lambda: self._remove_image(str(image.id)))
        return tag

    def _remove_image(self, ref: str) -> None:
        client = self.client()
        with contextlib.suppress(docker.errors.ImageNotFound), contextlib.closing(client):
            client.images.remove(ref, force=True)

    def fresh_image(self, name: str) -> tuple[str, str]:
        """An image the engine does not hold yet: the conformant one with a label of its own
        (``tiny-*``: a few bytes from scratch, without a command, for what needs no model)."""

        def make() -> tuple[str, str]:
            self.sample(build.CONFORMANT.name)
            if name.startswith("tiny-"):
                context = self.root / "fresh" / name
                context.mkdir(parents=True)
                (context / "weights.bin").write_bytes(name.encode())
                recipe = ["FROM scratch", "COPY weights.bin /weights.bin"]
                (context / "Dockerfile").write_text("\n".join(recipe) + "\n")
                tag = self._build(context, f"psc-test/fresh-{name}:{self.tag_suffix}")
            client = self.client()
            with contextlib.closing(client):
                if not name.startswith("tiny-"):
                    tag = self._commit(client, f"fresh-{name}", None, [])
                return tag, str(client.images.get(tag).id)

        return self._once(f"fresh-image:{name}", make)  # type: ignore[no-any-return]

    def tar(self, name: str) -> str:
        """A ``docker save`` archive: of a fresh image (see ``fresh_image``) that is then removed
        from the engine; ``two-images``: of the conformant sample and broken-status-html;
        ``grpc-langid``: of the conformant gRPC sample (which stays in the engine)."""

        def make() -> str:
            path = self.root / "tars" / f"{name}.tar"
            path.parent.mkdir(parents=True, exist_ok=True)
            client = self.client()
            with contextlib.closing(client):
                if name == "two-images":
                    names = [self.sample(build.CONFORMANT.name), self.sample("broken-status-html")]
                elif name == "grpc-langid":
                    names = [self.sample(name)]
                else:
                    tag, image_id = self.fresh_image(name)
                    names = [tag]
                    self.image_ids[name] = image_id
                response = client.api._get(
                    client.api._url("/images/get"), params={"names": names}, stream=True
                )
                with response, path.open("wb") as out:
                    response.raise_for_status()
                    for chunk in response.iter_content(1 << 20):
                        out.write(chunk)
                if name not in ("two-images", "grpc-langid"):
                    client.images.remove(names[0], force=True)
            return str(path)

        return self._once(f"tar:{name}", make)  # type: ignore[no-any-return]

    # -- a registry on loopback ------------------------------------------------------------

    def registry(self) -> Registry:
        def make() -> Registry:
            if shutil.which("docker-registry") is None:
                pytest.skip("docker-registry is not installed (tests/install-system-deps.sh installs it)")
            workdir = self.root / "registry"
            workdir.mkdir()
            stack = contextlib.ExitStack()
            started = stack.enter_context(running_registry(workdir, REGISTRY_USER, REGISTRY_PASSWORD))
            self.on_close(stack.close)
            return started

        return self._once("registry", make)  # type: ignore[no-any-return]

    def pushed(self, repository: str) -> str:
        """The conformant sample pushed as ``<registry>/psc/<repository>:latest`` (not tagged locally)."""

        def make() -> str:
            source = self.sample(build.CONFORMANT.name)
            client = self.client()
            with contextlib.closing(client):
                return push(client, self.registry(), source, f"psc/{repository}")[0]

        return self._once(f"pushed:{repository}", make)  # type: ignore[no-any-return]

    def _pushed_fresh(self, name: str) -> tuple[str, str]:
        def make() -> tuple[str, str]:
            tag, image_id = self.fresh_image(f"registry-{name}")
            client = self.client()
            with contextlib.closing(client):
                ref, digest = push(client, self.registry(), tag, f"psc/team/{name}")
                client.images.remove(image_id, force=True)  # the engine must not hold it any more
            return ref, digest

        return self._once(f"fresh:{name}", make)  # type: ignore[no-any-return]

    def fresh(self, name: str) -> str:
        """An image only the registry holds, as ``<registry>/psc/team/<name>:latest``."""
        return self._pushed_fresh(name)[0]

    def digest_ref(self, name: str) -> str:
        """The same, named by digest: ``<registry>/psc/team/<name>@sha256:...``."""
        ref, digest = self._pushed_fresh(name)
        return f"{ref.rsplit(':', 1)[0]}@{digest}"


class _Lazy:
    """``{pushed[name]}`` in a format string: made when the run is started."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self.make = make

    def __getitem__(self, key: str) -> Any:
        return self.make(key)
