"""The conformance run of one image: prepare it once, start it once, run every check on it.

Knows nothing of pytest: a script can drive an ``ImageRun`` directly. What it sees goes
into its ``Observation``; each check's HTTP exchanges into that check's evidence.
"""

from __future__ import annotations

import contextlib
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from . import cases as casedata
from . import engine, images, jobs, reaper
from .container import Limits, ModelContainer, Readiness
from .declared import Declared
from .errors import Nonconformance, NotRun, SetupError
from .http import Exchange
from .labels import labels
from .metadata import ModelMetadata
from .observe import Observation, Step, timed
from .options import RunOptions
from .platform import CHECK_STEP, FAILED, FINAL_STEP, LOAD_STEP, READY, RUN_STEPS, UPLOAD_STEP
from .rehearsal import Rehearsal, ResourceSampler, Timing
from .sources import ImageSource, ProgressLine

DEFAULT_STATUS_TIMEOUT = 60.0
DEFAULT_RUN_TIMEOUT = 60.0
EXTRA_JOBS = 5  # room for the author's own jobs in the run's bound
BOUND_SLACK = 60.0


def effective(option: float | None, declared: float | None, default: float) -> float:
    """The one precedence rule of every timeout: the command line, then model.yaml, then the default."""
    return option or declared or default


@dataclass
class ShutdownResult:
    exchange: Exchange
    exit_code: int | None  # None: still running after the wait, then killed
    waited: float


@dataclass
class CheckRecord:
    """What one check saw: its exchanges, and when it began (for its log lines)."""

    check_id: str
    began: float  # time.time()
    evidence: list[Exchange] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # extra fields of its report record


class ImageRun:
    def __init__(
        self,
        source: ImageSource,
        options: RunOptions,
        *,
        session_id: str | None = None,
        progress: ProgressLine | None = None,
    ) -> None:
        self.source = source
        self.options = options
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.progress = progress  # live lines while an image is uploaded
        self.observed = Observation(source.label, source.reference, source.source)
        self.declared = Declared(self.observed)
        self.engine: engine.Engine | None = None
        self.client: docker.DockerClient | None = None
        self.image: images.PreparedImage | None = None
        self.container: ModelContainer | None = None
        self.readiness: Readiness | None = None
        self.shutdown: ShutdownResult | None = None
        self.setup_error: SetupError | None = None
        self.died_during: str | None = None  # the check during which the model exited unasked
        self.unanswered_in: str | None = None  # the last check whose request was dropped or refused
        self.root_causes: dict[str, str] = {}  # a finding's reason -> the check that found it first
        self.current: CheckRecord | None = None
        self.rehearsal: Rehearsal | None = None
        self._staged: dict[object, list[jobs.JobDirs]] = {}  # prestaged job directories, by their inputs
        self.sampler: ResourceSampler | None = None
        self.cleanup_problems: list[str] = []
        self._prepared = False
        self._uploaded = 0.0
        self._upload_began: float | None = None

    @property
    def label(self) -> str:
        return self.source.label

    # -- checks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def checking(self, check_id: str) -> Iterator[CheckRecord]:
        """Run one check: its exchanges are its evidence; an exit of the model during it, its finding."""
        record = CheckRecord(check_id, time.time())
        self.current = record
        try:
            yield record
            self.require_alive()
        finally:
            self.current = None

    def cite(self, exchange: Exchange | None) -> None:
        """Count an earlier exchange as evidence of the check running now (the /status it judges)."""
        if self.current is not None and exchange is not None and exchange not in self.current.evidence:
            self.current.evidence.append(exchange)
        if exchange is not None and exchange.answered:
            self.unanswered_in = None  # the model answered since: a later exit is news

    def require_alive(self) -> None:
        """An exit that nobody asked for is the finding of the check that sees it."""
        container = self.container
        if container is None or not container.started or self.shutdown is not None:
            return
        if self.died_during is not None:
            return
        code = container.exit_code()
        if code is None:
            return
        if self.unanswered_in is not None and self.unanswered_in != (self.current and self.current.check_id):
            # One root cause, one failure: the check left unanswered saw this exit first.
            self.died_during = self.unanswered_in
            raise NotRun(f"the model exited with code {code} during {self.died_during}, which failed")
        self.died_during = self.current.check_id if self.current else "a check"
        oom = bool(container.state().get("OOMKilled"))
        raise self.finding(
            "the model process",
            "to keep running and serving until POST /shutdown",
            f"it exited with code {code}{self.exit_cause(oom)}",
            "lifetime",
        )

    def exit_cause(self, oom_killed: bool) -> str:
        """What ended the model, to follow its exit code: the engine's out-of-memory kill, or
        the line of its log that explains it (a traceback's last line), so that a failure's
        first lines name the cause."""
        if oom_killed:
            return f", killed by the engine: {self.out_of_memory()}"
        line = explaining_line(self.container.log_tail() if self.container is not None else "")
        return f": {line}" if line else ""

    def out_of_memory(self) -> str:
        """An out-of-memory kill, against the declared memory, with the peak seen before it."""
        declared = self.limits.memory_bytes
        figures = self.rehearsal.resources if self.rehearsal else None
        peak = (
            f"; peak seen before: {figures.peak_bytes / 2**20:.0f} MiB"
            if figures and figures.peak_bytes
            else ""
        )
        return f"the model ran out of its declared memory ({declared / 2**20:.0f} MiB{peak})"

    def finding(self, route: str, expected: str, actual: str, rule: str) -> Nonconformance:
        return Nonconformance(route, expected, actual, rule, log_tail=self.log_tail())

    # -- preparation ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Connect, bring the image into the engine, find model.yaml. Once; errors are kept."""
        if self.setup_error is not None:
            raise NotRun(f"the image was not evaluated: {self.setup_error}")
        if self._prepared:
            return
        try:
            self._prepare()
        except SetupError as exc:
            self.setup_error = exc
            self.observed.problem(str(exc))
            raise
        except Exception as exc:  # kept too: preparing again would load the image again
            self.setup_error = SetupError(f"preparing the image failed: {type(exc).__name__}: {exc}")
            self.observed.problem(str(self.setup_error))
            raise self.setup_error from None
        self._prepared = True

    @contextlib.contextmanager
    def _uploading(self) -> Iterator[None]:
        self._upload_began = time.monotonic()
        try:
            yield
        finally:
            self._uploaded += time.monotonic() - self._upload_began
            self._upload_began = None

    @property
    def uploading(self) -> bool:
        return self._upload_began is not None

    def upload_seconds(self) -> float:
        """Time spent bringing the image in so far (an upload under way included): the time
        bound leaves it out, since an upload is bounded by the engine's progress instead."""
        began = self._upload_began
        return self._uploaded + (time.monotonic() - began if began is not None else 0.0)

    def _prepare(self) -> None:
        if self.source.error is not None:
            raise SetupError(self.source.error)
        declared = self.declared
        if self.options.model_data is not None:
            declared.read_cases(self.options.model_data)
        given_yaml = None
        if self.options.model_yaml is not None:
            self.observed.model_yaml_note = f"model.yaml from {self.options.model_yaml}"
            given_yaml = read_metadata_text(self.options.model_yaml)
            declared.use(given_yaml, str(self.options.model_yaml))
        self.engine = engine.resolve(self.options.engine_host)
        self.client = self.engine.connect()
        try:
            self.observed.engine_version = str(self.client.version().get("Version"))
        except Exception as exc:
            where = self.engine.where
            raise SetupError(f"cannot reach the Docker engine {where}: {images.reason(exc)}") from None
        # What runs killed outright left behind goes first (never a live run's).
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.observed.reaped = reaper.reap(self.client)
        with timed(self.observed.load_steps, *UPLOAD_STEP) as details, self._uploading():
            self.image = self.source.bring_in(self.client, self.observed, self.progress)
            self.observed.source = self.source.source
            details.update(source=self.source.source, uploadPercentage=100)
        self.observed.image_id = self.image.image_id
        self.observed.digest = self.image.digest
        self.observed.image_bytes = self.image.size
        if self.has_command:
            # Read from the model's own container, created but not started: no extra container.
            created = self._created()
            assert created.container is not None
            in_image = images.read_model_yaml(created.container, self.image)
            if in_image is not None and given_yaml is not None:
                declared.compare(given_yaml, *in_image)
            elif in_image is not None:
                text, where = in_image
                self.observed.model_yaml_note = f"model.yaml found in the image at {where.split(':')[-1]}"
                declared.use(text, where)
                created.set_limits(self.limits)
            elif given_yaml is None:
                self.observed.model_yaml_note = (
                    "no model.yaml: given none, and none in the image's working directory or /opt/app; "
                    "the container gets the default limits"
                )
        declared.check_cases()

    # The author's declarations, as the checks read them.

    @property
    def metadata(self) -> ModelMetadata | None:
        return self.declared.metadata

    @property
    def metadata_error(self) -> str | None:
        return self.declared.metadata_error

    @property
    def cases(self) -> list[casedata.Case]:
        return self.declared.cases

    def case_inputs(self, case: casedata.Case) -> dict[str, Path]:
        return self.declared.case_inputs(case)

    def case_outputs(self, case: casedata.Case) -> dict[str, Path]:
        return self.declared.case_outputs(case)

    def case_message(self, case: casedata.Case) -> str:
        return self.declared.case_message(case)

    @property
    def has_command(self) -> bool:
        assert self.image is not None
        return bool(self.image.config.get("Cmd") or self.image.config.get("Entrypoint"))

    def bound(self, run_checks: int) -> float:
        """The longest this image's battery may take once prepared (uploads are not counted)."""
        jobs_ = run_checks + EXTRA_JOBS
        return (
            self.status_timeout + jobs_ * self.run_timeout + 2 * self.options.shutdown_timeout + BOUND_SLACK
        )

    @property
    def status_timeout(self) -> float:
        declared = self.metadata.status_timeout if self.metadata else None
        return effective(self.options.status_timeout, declared, DEFAULT_STATUS_TIMEOUT)

    @property
    def run_timeout(self) -> float:
        declared = self.metadata.run_timeout if self.metadata else None
        return effective(self.options.run_timeout, declared, DEFAULT_RUN_TIMEOUT)

    @property
    def limits(self) -> Limits:
        if self.metadata is None:
            return Limits()
        return Limits(self.metadata.memory_bytes, self.metadata.cpu_count)

    @property
    def model_name(self) -> str:
        return self.metadata.name if self.metadata else self.label

    # -- the container --------------------------------------------------------------------

    def _created(self) -> ModelContainer:
        """The model's container, created but not started, with the declared resources."""
        if self.container is None:
            assert self.client is not None and self.image is not None
            container = ModelContainer(
                self.client,
                self.image.image_id,
                labels=labels(self.session_id),
                limits=self.limits,
                engine=self.engine,
            )
            self.container = container  # registered first: removed at close even if creating fails
            container.create()
        return self.container

    def start(self) -> ModelContainer:
        """Start the container once: one start serves the whole battery."""
        self.prepare()
        if not self.has_command:
            raise NotRun("the image has no default command (see image.default-command)")
        if self.shutdown is not None:
            return self.restart()  # a check runs after /shutdown (pytest --ff, -p randomly...)
        container = self._created()
        if container.started:
            return container
        number, name, percentage = LOAD_STEP
        with timed(
            self.observed.load_steps, number, name.format(name=self.model_name), percentage
        ) as details:
            try:
                container.start()
            except SetupError as exc:
                self.setup_error = exc  # one failed start is enough: the other checks do not run
                raise
            limits = container.limits
            details.update(
                modelPort=container.model_port, memoryBytes=limits.memory_bytes, cpus=limits.cpu_count
            )
            details.update(publishedAt=container.published_at, reachedAt=container.reached_at)
        if self.rehearsal is None:
            self.rehearsal = Rehearsal(
                limits.memory_bytes,
                limits.cpu_count,
                self.metadata.gpu_count if self.metadata else 0,
                Timing(self.status_timeout),
                Timing(self.run_timeout),
                margin=self.options.margin,
            )
            self.observed.rehearsal = self.rehearsal
        self.sampler = ResourceSampler(container, self.rehearsal.resources)
        self.sampler.start()
        return container

    def restart(self) -> ModelContainer:
        """A fresh container, for checks that come after /shutdown (the author's own tests)."""
        if self.container is not None:
            self.container.remove()
        self.container = None
        self.readiness = self.shutdown = None
        self._staged = {}
        return self.start()

    def wait_ready(self) -> Readiness:
        if self.readiness is None:
            container = self.start()
            with timed(self.observed.load_steps, *CHECK_STEP) as details:
                try:
                    readiness = container.wait_ready(self.status_timeout)
                except SetupError as exc:  # its port cannot be reached: the image is not evaluated
                    self.setup_error = exc
                    raise
                details.update(
                    polls=readiness.polls,
                    statusTimeoutSeconds=self.status_timeout,
                    firstAcceptSeconds=_rounded(readiness.first_accept_seconds),
                    firstAnswerSeconds=_rounded(readiness.first_answer_seconds),
                    readySeconds=_rounded(readiness.seconds) if readiness.ready else None,
                )
            final = Step(
                FINAL_STEP, READY if readiness.ready else FAILED, 100 if readiness.ready else 66, time.time()
            )
            if not readiness.ready:
                final.details["reason"] = self.not_ready_reason(readiness)
            else:
                assert self.sampler is not None and self.rehearsal is not None
                self.sampler.mark_ready()
                self.rehearsal.status.seconds = readiness.seconds
            self.observed.load_steps.append(final)
            self.readiness = readiness
        self.cite(self.readiness.last)
        return self.readiness

    def not_ready_reason(self, readiness: Readiness) -> str:
        if readiness.exit_code is not None:
            return (
                f"the container exited with code {readiness.exit_code} during start-up, "
                f"after {readiness.seconds:.1f} s{self.exit_cause(readiness.oom_killed)}"
            )
        if readiness.other_ports:
            assert self.container is not None
            where = ", ".join(map(str, readiness.other_ports))
            port = self.container.model_port
            return f"nothing listens on PSC_MODEL_PORT={port}; the server listens on {where}"
        last = readiness.last.summary() if readiness.last else "no request could be sent"
        return f"/status not 200 within {self.status_timeout:g} s ({readiness.polls} polls; last: {last})"

    def require_ready(self) -> ModelContainer:
        if self.shutdown is not None:
            self.restart()
        readiness = self.wait_ready()
        if not readiness.ready:
            raise NotRun("the model never became ready (see status.ready)")
        if self.died_during is not None:
            raise NotRun(f"the model exited unexpectedly during {self.died_during}")
        self.require_alive()
        assert self.container is not None
        return self.container

    def log_tail(self) -> str:
        if self.container is None:
            return ""
        since = self.current.began if self.current is not None else None
        # The lines of this check's own time span first; the last lines of all when it wrote none.
        return (since is not None and self.container.log_tail(since=since)) or self.container.log_tail()

    # -- jobs -----------------------------------------------------------------------------

    def run_job(
        self,
        inputs: Mapping[str, bytes | Path],
        *,
        name: str = "job",
        payload: dict[str, object] | None = None,
    ) -> jobs.JobResult:
        """POST /run on the given input files (name -> content or file); returns the evidence."""
        steps: list[Step] = []
        number = iter(RUN_STEPS)
        with timed(steps, *next(number)):
            container = self.require_ready()
        with timed(steps, *next(number)):
            staged = self._staged.get(_inputs_key(inputs))
            dirs = staged.pop() if staged else jobs.stage(container, inputs)
        job = {"type": "file", "input": dirs.input_dir, "output": dirs.output_dir, **(payload or {})}
        assert container.http is not None
        if self.sampler is not None:
            self.sampler.mark_busy()
        with timed(steps, *next(number)) as details:
            exchange = container.http.post_json("/run", job, timeout=self.run_timeout)
            self.cite(exchange)
            if exchange.answered and self.rehearsal is not None:
                slowest = self.rehearsal.run.seconds or 0.0
                self.rehearsal.run.seconds = max(slowest, exchange.seconds)
            details.update(httpStatus=exchange.status, outcome=exchange.outcome.value)
        caps = {k: v or 0 for k, v in self.metadata.output_max.items()} if self.metadata else {}
        result = jobs.JobResult(
            exchange,
            dirs.input_dir,
            dirs.output_dir,
            lambda: jobs.read_outputs(container, dirs.output_dir, caps),
            lambda: jobs.list_undeclared(container, dirs.output_dir, caps),
        )
        if exchange.status == 200 and exchange.answered:
            # Outputs are recorded after a success, as on the platform; an error's are read
            # only if asked for (each read of an output costs the engine a mount).
            with timed(steps, *next(number)) as details:
                details["outputs"] = sorted(n for n, o in result.outputs.items() if o.exists())
            number_, name_, percentage = next(number)
            steps.append(Step(number_, name_, percentage, time.time()))
        self.observed.jobs.append(
            {"job": name, "httpStatus": exchange.status, "steps": [s.as_dict() for s in steps]}
        )
        return result

    def prestage(self, planned: Sequence[Mapping[str, Path]]) -> None:
        """Copy the inputs of the jobs the battery will make into the container at once.

        Each job still gets directories of its own, used once; a job that was not planned
        is staged when it comes.
        """
        if self._staged or not planned:
            return
        container = self.require_ready()
        for inputs, dirs in zip(planned, jobs.stage_many(container, planned), strict=True):
            self._staged.setdefault(_inputs_key(inputs), []).append(dirs)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Exchange:
        """One exchange with the ready model (default timeout: the run timeout), cited as the
        evidence of the check under way."""
        container = self.require_ready()
        assert container.http is not None
        if self.sampler is not None:
            self.sampler.mark_busy()  # a read from now on is no longer the memory at ready
        exchange = container.http.request(
            method, path, body=body, headers=headers, timeout=timeout or self.run_timeout
        )
        self.cite(exchange)
        return exchange

    # -- shutdown and cleanup -------------------------------------------------------------

    def shut_down(self) -> ShutdownResult:
        if self.shutdown is None:
            container = self.require_ready()
            assert container.http is not None
            if self.sampler is not None:
                # The figures of the running model, not of its way out; the high-water mark
                # read now holds a /run too short for any sample.
                self.sampler.final()
            # One deadline covers the answer and the exit.
            began = time.monotonic()
            exchange = container.http.request("POST", "/shutdown", timeout=self.options.shutdown_timeout)
            left = self.options.shutdown_timeout - (time.monotonic() - began)
            code = container.wait_exit(max(left, 0.1))
            if code is None:
                container.kill()
            self.shutdown = ShutdownResult(exchange, code, time.monotonic() - began)
        self.cite(self.shutdown.exchange)
        return self.shutdown

    def close(self) -> None:
        """Remove everything this run created: the container, and the image it loaded or pulled."""
        # Each step on its own: one that fails must not leave the others undone.
        steps: list[Callable[[], None]] = []
        if self.sampler is not None:
            steps.append(self.sampler.stop)
        if self.container is not None:
            steps.append(self.container.remove)
        client = self.client
        if client is not None:
            steps += [lambda: self.source.cleanup(client), client.close]
        problems = []
        for step in steps:
            try:
                step()
            except Exception as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
        self.container = None
        self.client = None
        self.cleanup_problems = problems


# A line that reads as an error's own: `Name: message` of an exception (a Python traceback's
# last line, Java's `Exception in thread ...`), a Go panic, or a line headed error/fatal.
_EXPLAINING = re.compile(
    r"^(?:[A-Za-z_][\w.$]*(?:Error|Exception|Exit|Interrupt)\b|Traceback\b|(?i:panic:|fatal\b|error\b))"
)
EXPLAINING_MAX = 200  # characters of a log line quoted in a failure's first line


def explaining_line(log_tail: str) -> str | None:
    """The line of a log tail that explains an exit: the last one that reads as an error's,
    else the last line that is not empty; at most EXPLAINING_MAX characters."""
    lines = [line.strip() for line in log_tail.splitlines()]
    lines = [line.removeprefix("[...]").strip() for line in lines if line]
    chosen = next((line for line in reversed(lines) if _EXPLAINING.match(line)), None)
    chosen = chosen or next((line for line in reversed(lines) if line), None)
    if chosen is None:
        return None
    chosen = "".join(c if c.isprintable() else " " for c in chosen)
    return chosen if len(chosen) <= EXPLAINING_MAX else chosen[: EXPLAINING_MAX - 3] + "..."


def _inputs_key(inputs: Mapping[str, bytes | Path]) -> object:
    """Jobs whose inputs are the same files share a key (content given as bytes never does)."""
    if not all(isinstance(value, Path) for value in inputs.values()):
        return object()
    return frozenset((name, str(value)) for name, value in inputs.items())


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def read_metadata_text(path: Path) -> str:
    try:
        found = path.stat()
        if not stat.S_ISREG(found.st_mode):  # a FIFO would block the run before any check
            raise SetupError(f"model.yaml {path} is not a regular file")
        if found.st_size > images.MODEL_YAML_MAX:
            raise SetupError(f"model.yaml {path} is larger than 1 MiB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SetupError(f"model.yaml {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read model.yaml {path}: {exc}") from None
