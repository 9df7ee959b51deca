"""The conformance run of one image: prepare it once, start it once, run every check on it.

Knows nothing of pytest: a script can drive an ``ImageRun`` directly.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from . import cases as casedata
from . import images, reaper, registry
from .container import Limits, ModelContainer, Readiness
from .errors import CheckSkipped, SetupError
from .http import Exchange
from .metadata import ModelMetadata, parse_metadata
from .options import RunOptions
from .registry import Progress, Reference

LABEL = "org.psc-harness"
SESSION_LABEL = "org.psc-harness.session"
MOUNT_ROOT = "/psc-harness"
DEFAULT_STATUS_TIMEOUT = 60.0
DEFAULT_RUN_TIMEOUT = 60.0
EXTRA_JOBS = 5  # room for the author's own jobs in the run's bound
BOUND_SLACK = 60.0

# The platform's names for the steps of taking an image in (SPEC.md section 1).
UPLOADING = "Uploading container image"
LOADING = "Loading model '{name}'"
CHECKING = "Checking status endpoint"
READY = "Ready"
FAILED = "Failed"
RUN_STEPS = ("Loading model", "Fetching inputs", "Submitting inputs", "Recording outputs", "Completed")


@dataclass
class Step:
    """One step as the platform reports it, with what the harness observed during it."""

    number: int
    name: str
    percentage: int
    started_at: float  # time.time()
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.number,
            "stepName": self.name,
            "percentage": self.percentage,
            "startedAt": datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="milliseconds"),
            "durationSeconds": round(self.seconds, 4),
            **({"details": self.details} if self.details else {}),
        }


@contextlib.contextmanager
def timed(steps: list[Step], number: int, name: str, percentage: int) -> Iterator[dict[str, Any]]:
    """Record a step around a block; a failure is noted in the step and passed on."""
    step = Step(number, name, percentage, time.time())
    steps.append(step)
    began = time.monotonic()
    try:
        yield step.details
    except Exception as exc:
        step.details["error"] = str(exc)
        raise
    finally:
        step.seconds = time.monotonic() - began


@dataclass(frozen=True)
class Target:
    """An image to check, as the user named it."""

    kind: str  # "image" or "tar"
    ref: str
    manifest: images.TarManifest | None = None
    reference: Reference | None = None  # parsed, for "image" targets
    error: str | None = None  # what makes this target impossible to evaluate, found early

    @property
    def label(self) -> str:
        return self.ref if self.kind == "image" else Path(self.ref).name


@dataclass
class JobResult:
    exchange: Exchange
    input_dir: Path
    output_dir: Path

    def output(self, name: str) -> Path:
        return self.output_dir / name


@dataclass
class ShutdownResult:
    exchange: Exchange
    exit_code: int | None  # None: still running after the wait, then killed
    waited: float


@dataclass
class ImageRun:
    target: Target
    options: RunOptions
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    progress: Callable[[str], None] | None = None  # live lines while an image is uploaded

    client: docker.DockerClient | None = None
    image: images.PreparedImage | None = None
    metadata: ModelMetadata | None = None
    metadata_note: str = ""
    cases: list[casedata.Case] = field(default_factory=list)
    container: ModelContainer | None = None
    readiness: Readiness | None = None
    shutdown: ShutdownResult | None = None
    setup_error: SetupError | None = None
    engine_version: str | None = None
    load_steps: list[Step] = field(default_factory=list)
    pulled_refs: list[str] = field(default_factory=list)
    label: str = ""  # unique among the images of one session
    reaped: list[str] = field(default_factory=list)
    cleanup_problems: list[str] = field(default_factory=list)
    _prepared: bool = False
    jobs: list[dict[str, Any]] = field(default_factory=list)
    _workdir: Path | None = None
    _jobs: int = 0

    # -- preparation -------------------------------------------------------------------

    def prepare(self) -> None:
        """Connect, bring the image into the engine, find model.yaml. Once; errors are kept."""
        if self.setup_error is not None:
            raise CheckSkipped(f"not evaluated: {self.setup_error}")
        if self._prepared:
            return
        try:
            self._prepare()
        except SetupError as exc:
            self.setup_error = exc
            raise
        except Exception as exc:  # kept too: preparing again would load the image again
            self.setup_error = SetupError(f"preparing the image failed: {type(exc).__name__}: {exc}")
            raise self.setup_error from None
        self._prepared = True

    def _prepare(self) -> None:
        if self.target.error is not None:
            raise SetupError(self.target.error)
        if self.options.model_data is not None:
            self.cases = casedata.discover(self.options.model_data)
        if self.options.model_yaml is not None:
            self.metadata = read_metadata_file(self.options.model_yaml)
            self.metadata_note = f"model.yaml from {self.options.model_yaml}"
        self.client = images.connect()
        try:
            self.engine_version = str(self.client.version().get("Version"))
        except Exception as exc:
            raise SetupError(f"cannot reach the Docker engine: {images.reason(exc)}") from None
        # What runs killed outright left behind goes first (never a live run's).
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.reaped = reaper.reap(self.client)
        with timed(self.load_steps, 1, UPLOADING, 0) as details:
            if self.target.kind == "tar":
                self.image = self._load_tar(details)
            else:
                self.image = self._image_from_reference(details)
            details["uploadPercentage"] = 100
        if self.metadata is None:
            # Read from the model's own container, created but not started: no extra container.
            created = self._created()
            assert created.container is not None
            found = images.read_model_yaml(created.container, self.image)
            if found is not None:
                text, where = found
                self.metadata = parse_metadata(text, where)
                self.metadata_note = f"model.yaml found in the image at {where.split(':')[-1]}"
                created.set_limits(self.limits)
            else:
                self.metadata_note = (
                    "no model.yaml: given none, and none in the image's working directory or /opt/app"
                )
        if self.metadata is not None:
            for case in self.cases:  # bad test-case data is found here, before any check runs
                casedata.resolve_inputs(case, self.metadata.inputs)
                casedata.expected_outputs(case, self.metadata.outputs)
                if case.kind == casedata.VALIDATION_ERRORS:
                    casedata.expected_message(case)

    def _load_tar(self, details: dict[str, Any]) -> images.PreparedImage:
        assert self.client is not None
        manifest = self.target.manifest or images.read_tar_manifest(Path(self.target.ref))
        details.update(source="tar", bytes=manifest.path.stat().st_size)
        return images.load_tar(self.client, manifest, self._progress_to(f"loading {manifest.path.name}"))

    def _image_from_reference(self, details: dict[str, Any]) -> images.PreparedImage:
        """The image named by reference: in the engine, or pulled, as the pull policy says."""
        assert self.client is not None and self.target.reference is not None
        reference = self.target.reference
        if self.options.pull != "always":
            try:
                details.update(source="tag")
                return images.from_tag(self.client, reference.text)
            except SetupError:
                if self.options.pull == "never":
                    raise
        details.update(source="registry")
        if not images.image_present(self.client, reference.text):
            self.pulled_refs.append(reference.text)  # before pulling: a pull cut short is removed too
        try:
            pulled = registry.pull(
                self.client,
                reference,
                self.options.credentials,
                self._progress_to(f"pulling {reference.text}"),
            )
        except SetupError as exc:
            if reference.explicit_registry or self.options.pull == "always":
                raise
            # Most likely a local tag mistyped, rather than an image meant to come from Docker Hub.
            raise SetupError(
                f"image {reference.text} is not in the Docker engine (pulling it failed: {exc})"
            ) from None
        details.update(bytes=pulled.total)
        image = images.from_tag(self.client, reference.text)
        image.source = "registry"
        return image

    def _progress_to(self, what: str) -> Callable[[Progress], None] | None:
        show = self.progress
        if show is None:
            return None
        return lambda seen: show(seen.line(what))

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: "1", SESSION_LABEL: self.session_id, reaper.OWNER_LABEL: reaper.owner_token()}

    def bound(self, run_checks: int) -> float:
        """The longest this image's battery may take once prepared (uploads are not counted)."""
        jobs = run_checks + EXTRA_JOBS
        return self.status_timeout + jobs * self.run_timeout + 2 * self.options.shutdown_timeout + BOUND_SLACK

    @property
    def status_timeout(self) -> float:
        declared = self.metadata.status_timeout if self.metadata else None
        return self.options.status_timeout or declared or DEFAULT_STATUS_TIMEOUT

    @property
    def run_timeout(self) -> float:
        declared = self.metadata.run_timeout if self.metadata else None
        return self.options.run_timeout or declared or DEFAULT_RUN_TIMEOUT

    # -- the container -----------------------------------------------------------------

    def _created(self) -> ModelContainer:
        """The model's container, created but not started, with the declared resources."""
        if self.container is None:
            assert self.client is not None and self.image is not None
            workdir = self.workdir()
            mounts = {
                workdir / "in": (f"{MOUNT_ROOT}/in", "ro"),
                workdir / "out": (f"{MOUNT_ROOT}/out", "rw"),
            }
            container = ModelContainer(
                self.client, self.image.image_id, labels=self.labels, limits=self.limits, mounts=mounts
            )
            self.container = container  # registered first: removed at close even if creating fails
            container.create()
        return self.container

    @property
    def limits(self) -> Limits:
        if self.metadata is None:
            return Limits(None, None)
        return Limits(self.metadata.memory_bytes, self.metadata.cpu_count)

    def start(self) -> ModelContainer:
        """Start the container once: one start serves the whole battery."""
        self.prepare()
        if self.shutdown is not None:
            return self.restart()  # a check runs after /shutdown (pytest --ff, -p randomly...)
        container = self._created()
        if container.started:
            return container
        with timed(self.load_steps, 2, LOADING.format(name=self.model_name), 33) as details:
            try:
                container.start()
            except SetupError as exc:
                self.setup_error = exc  # one failed start is enough: the other checks skip
                raise
            limits = container.limits
            details.update(
                modelPort=container.model_port, memoryBytes=limits.memory_bytes, cpus=limits.cpu_count
            )
        return container

    @property
    def model_name(self) -> str:
        return self.metadata.name if self.metadata else self.target.label

    def restart(self) -> ModelContainer:
        """A fresh container, for checks that come after /shutdown (the author's own tests)."""
        if self.container is not None:
            self.container.remove()
        self.container = None
        self.readiness = self.shutdown = None
        return self.start()

    def wait_ready(self) -> Readiness:
        if self.readiness is None:
            container = self.start()
            with timed(self.load_steps, 3, CHECKING, 66) as details:
                readiness = container.wait_ready(self.status_timeout)
                details.update(
                    polls=readiness.polls,
                    statusTimeoutSeconds=self.status_timeout,
                    firstAcceptSeconds=_rounded(readiness.first_accept_seconds),
                    firstAnswerSeconds=_rounded(readiness.first_answer_seconds),
                    readySeconds=_rounded(readiness.seconds) if readiness.ready else None,
                )
            final = Step(4, READY if readiness.ready else FAILED, 100 if readiness.ready else 66, time.time())
            if not readiness.ready:
                final.details["reason"] = self.not_ready_reason(readiness)
            self.load_steps.append(final)
            self.readiness = readiness
        return self.readiness

    def not_ready_reason(self, readiness: Readiness) -> str:
        if readiness.exit_code is not None:
            oom = ", killed for exceeding its declared memory" if readiness.oom_killed else ""
            seconds = readiness.seconds
            return f"the container exited with code {readiness.exit_code} after {seconds:.1f} s{oom}"
        last = readiness.last.summary() if readiness.last else "no request could be sent"
        return f"/status not 200 within {self.status_timeout:g} s ({readiness.polls} polls; last: {last})"

    def require_ready(self) -> ModelContainer:
        if self.shutdown is not None:
            self.restart()
        readiness = self.wait_ready()
        if not readiness.ready:
            raise CheckSkipped("the model never became ready (see status.ready)")
        assert self.container is not None
        code = self.container.exit_code()
        if code is not None:
            raise CheckSkipped(f"the container exited with code {code} during an earlier check")
        return self.container

    @property
    def history(self) -> list[Exchange]:
        return self.container.http.history if self.container and self.container.http else []

    def log_tail(self) -> str:
        return self.container.log_tail() if self.container else ""

    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=reaper.temp_dir_prefix(self.session_id)))
            (self._workdir / "in").mkdir(mode=0o755)
            (self._workdir / "out").mkdir()
            # The model may run as any user: let it write its outputs.
            (self._workdir / "out").chmod(0o777)
            self._workdir.chmod(0o755)
        return self._workdir

    # -- jobs -------------------------------------------------------------------------

    def job_dirs(self, name: str) -> tuple[Path, Path, str, str]:
        self._jobs += 1
        job = f"{self._jobs:03d}-{name}"
        input_dir = self.workdir() / "in" / job
        output_dir = self.workdir() / "out" / job
        input_dir.mkdir(mode=0o755)
        output_dir.mkdir()
        output_dir.chmod(0o777)
        return input_dir, output_dir, f"{MOUNT_ROOT}/in/{job}", f"{MOUNT_ROOT}/out/{job}"

    def run_job(
        self,
        inputs: Mapping[str, bytes | Path],
        *,
        name: str = "job",
        payload: dict[str, object] | None = None,
    ) -> JobResult:
        """POST /run on the given input files (name -> content or file); returns the evidence."""
        steps: list[Step] = []
        with timed(steps, 1, RUN_STEPS[0], 0):
            container = self.require_ready()
        with timed(steps, 2, RUN_STEPS[1], 25):
            input_dir, output_dir, inside_in, inside_out = self.job_dirs(name)
            for file_name, content in inputs.items():
                target = input_dir / file_name
                if isinstance(content, Path):
                    shutil.copyfile(content, target)
                else:
                    target.write_bytes(content)
                target.chmod(0o644)
        job = {"type": "file", "input": inside_in, "output": inside_out, **(payload or {})}
        assert container.http is not None
        with timed(steps, 3, RUN_STEPS[2], 50) as details:
            exchange = container.http.post_json("/run", job, timeout=self.run_timeout)
            details.update(httpStatus=exchange.status, error=exchange.error)
        with timed(steps, 4, RUN_STEPS[3], 75) as details:
            details["outputs"] = sorted(p.name for p in output_dir.iterdir()) if output_dir.is_dir() else []
        if exchange.status == 200:
            steps.append(Step(5, RUN_STEPS[4], 100, time.time()))
        self.jobs.append({"job": name, "httpStatus": exchange.status, "steps": [s.as_dict() for s in steps]})
        return JobResult(exchange, input_dir, output_dir)

    def post_raw(self, path: str, body: bytes, content_type: str) -> Exchange:
        container = self.require_ready()
        assert container.http is not None
        return container.http.request(
            "POST", path, body=body, headers={"Content-Type": content_type}, timeout=self.run_timeout
        )

    # -- shutdown and cleanup ----------------------------------------------------------

    def shut_down(self) -> ShutdownResult:
        if self.shutdown is None:
            container = self.require_ready()
            assert container.http is not None
            # One deadline covers the answer and the exit.
            began = time.monotonic()
            exchange = container.http.request("POST", "/shutdown", timeout=self.options.shutdown_timeout)
            left = self.options.shutdown_timeout - (time.monotonic() - began)
            code = container.wait_exit(max(left, 0.1))
            if code is None:
                container.kill()
            self.shutdown = ShutdownResult(exchange, code, time.monotonic() - began)
        return self.shutdown

    def close(self) -> None:
        """Remove everything this run created: container, temporary directories, loaded image."""
        # Each step on its own: one that fails must not leave the others undone.
        steps: list[Callable[[], None]] = []
        if self.container is not None:
            steps.append(self.container.remove)
        if self._workdir is not None:
            workdir = self._workdir
            steps.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
        client, image = self.client, self.image
        if client is not None and not self.options.keep_image:
            if image is not None:
                steps.append(lambda: images.remove_loaded(client, image))
            steps += [lambda ref=ref: images.untag(client, ref) for ref in self.pulled_refs]  # type: ignore[misc]
        if client is not None:
            steps.append(client.close)
        problems = []
        for step in steps:
            try:
                step()
            except Exception as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
        self.container, self._workdir, self.pulled_refs = None, None, []
        self.client = None
        self.cleanup_problems = problems


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def read_metadata_file(path: Path) -> ModelMetadata:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SetupError(f"model.yaml {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read model.yaml {path}: {exc}") from None
    return parse_metadata(text, str(path))
