"""Harness runs shared by the tests: each run is a real ``pytest --model-image ...`` in a
subprocess, started once per session and read by every test that needs its outcome.

A test names the runs it reads with ``@pytest.mark.harness(RUN, ...)`` and gets their
outcome with the ``harness`` fixture: ``harness(RUN)``. When the session starts, every run
that the selected tests named is started, longest first, a few at a time in a thread pool
(the tests that read no run go first meanwhile): a harness run waits much of its time (for
a model to start, for a timeout), so they overlap. A run's outcome never depends on another
run: each has its own directory, its own TMPDIR, and owns only the containers its own
process tree created.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests import engine
from tests.engine import ENVIRONMENT, ContainerRecord, EngineWatch, caught_signals
from tests.harness_api import PASSWORD_ENV

# Every run has this registry password in its environment (unless it sets its own): it
# must never appear in a terminal, a report or the JUnit XML.
SECRET = "s3cret-Registry-Passw0rd"
PARALLEL = int(os.environ.get("PSC_TEST_PARALLEL", "4"))  # runs at once, besides those that wait
WAITING = 4  # runs at once that wait on a long timeout: they would hold the others' slots

# A conftest.py that holds the run at one check until the test says go.
PAUSE_CONFTEST = """
import os, pathlib, time

def pytest_runtest_call(item):
    if item.nodeid.endswith("::" + os.environ["PSC_TEST_PAUSE_AT"]):
        where = pathlib.Path(os.environ["PSC_TEST_PAUSE_DIR"])
        (where / "paused").touch()
        deadline = time.monotonic() + 120
        while not (where / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
"""
# pytest with SIGINT ignored, as a job started in the background by a non-interactive shell.
IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, '-m', 'pytest', *sys.argv[1:]])"
)
# Runs a command and writes the peak RSS of its process tree (KiB) to argv[1].
MEASURING_RSS = (
    "import json, resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
    "open(sys.argv[1], 'w').write(json.dumps(peak)); sys.exit(code)"
)
VERBOSE_LINE = re.compile(
    r"^(?:\[gw\d+\] \[ *\d+%\] (?P<x_outcome>NOT RUN|[A-Z]+) (?P<x_id>\S+::\S+)"
    r"|(?P<id>\S+::\S+) (?P<outcome>PASSED|FAILED|SKIPPED|NOT RUN|ERROR|XFAIL|XPASS)\b)"
)
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
REAPED_NOTE = "harness: removed what killed runs left"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass(frozen=True)
class Run:
    """One harness invocation. ``args`` and ``env`` may name resources (tests/resources.py),
    made when the run starts: ``{sample[name]}``, ``{data}``, ``{mini}``, ``{registry}``,
    ``{pushed[name]}``, ``{fresh[name]}``, ``{digest[name]}``, ``{image[name]}``,
    ``{tar[name]}``; ``{dir}`` (the run's directory); and whatever ``prepare`` returns."""

    name: str
    args: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()  # written under the run's directory first
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = "work"  # relative to the run's directory
    stdin: str | None = None
    report: str | None = "out"  # --conformance-report, relative to cwd (None: not given)
    verbose: bool = True  # -v: one line per check, with its node id
    ignore_sigint: bool = False
    measure_rss: bool = False
    pause_at: str | None = None  # a check id: the run waits there for on_pause
    on_pause: Callable[[Handle], None] | None = None
    prepare: Callable[[Handle], Mapping[str, str] | None] | None = None
    after: Callable[[Handle, Result], None] | None = None
    remove_images: tuple[str, ...] = ()  # refs the run may leave behind: noted, then removed
    secret: str = SECRET  # must appear nowhere in what the run prints or writes
    password_env: bool = True  # give it as $PSC_REGISTRY_PASSWORD
    timeout: float = 240.0
    cost: float = 4.0  # seconds it is expected to take: the longest start first
    waits: bool = False  # spends most of its time waiting (a long timeout): has a pool of its own


@dataclass(frozen=True)
class Scenario:
    """Several processes in a given order (signals, kills, runs beside runs)."""

    name: str
    func: Callable[[Context], dict[str, Result]]
    cost: float = 10.0
    waits: bool = False


Entry = Run | Scenario


@dataclass
class Handle:
    """A run in progress."""

    run: Run
    ctx: Context
    dir: Path
    values: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    began: float = 0.0
    wall_began: float = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def cwd(self) -> Path:
        return self.dir / self.run.cwd

    def format(self, text: str) -> str:
        return text.format_map(_Placeholders(self))

    def containers(self) -> list[ContainerRecord]:
        return self.ctx.watch.owned_by(self.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Wait for a condition while the run is alive; fail if the run ends first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.alive():
                raise AssertionError(f"{self.run.name} ended before {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.run.name}: not {what} within {timeout:g} s")
            time.sleep(0.02)

    def handler_installed(self) -> bool:
        """The harness has installed its SIGTERM handler: it is active and will clean up."""
        return bool(caught_signals(self.pid) & SIGTERM_BIT)

    def container_running(self) -> bool:
        return any(r.started and not r.destroyed for r in self.containers())

    def output(self) -> str:
        return (self.dir / "stdout.txt").read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)


@dataclass
class Result:
    """What one harness run did and left."""

    run: Run
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    dir: Path
    cwd: Path
    pid: int
    began: float  # wall-clock time.time() bounds of the run
    ended: float
    containers: list[ContainerRecord]
    containers_left: list[str]  # names of its containers still there after it ended
    volumes_left: list[str]
    tmp_left: list[str]  # what it left in its own TMPDIR
    images_left: list[str]  # of run.remove_images, those still there
    peak_rss_kib: int | None
    facts: dict[str, Any]
    timed_out: bool = False
    cpu_seconds: float = 0.0  # of the pytest process that ran the harness

    def __str__(self) -> str:
        return f"{self.run.name}: exit {self.returncode}\n{self.stdout}\n{self.stderr}"

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def report_dir(self) -> Path | None:
        return self.cwd / self.run.report if self.run.report else None

    @cached_property
    def json(self) -> dict[str, Any]:
        assert self.report_dir is not None
        path = self.report_dir / "conformance.json"
        assert path.is_file(), f"no conformance.json:\n{self}"
        return json.loads(path.read_text())  # type: ignore[no-any-return]

    @property
    def has_json(self) -> bool:
        return self.report_dir is not None and (self.report_dir / "conformance.json").is_file()

    def image_entry(self, label: str | None = None) -> dict[str, Any]:
        entries = self.json["images"]
        if label is None:
            (entry,) = entries
            return entry  # type: ignore[no-any-return]
        return next(e for e in entries if e["image"]["label"] == label)  # type: ignore[no-any-return]

    def checks(self, label: str | None = None) -> dict[str, dict[str, Any]]:
        """This image's checks by id, from conformance.json."""
        return {c["id"]: c for c in self.image_entry(label)["checks"]}

    def outcomes(self, label: str | None = None) -> dict[str, str]:
        return {check_id: c["outcome"] for check_id, c in self.checks(label).items()}

    def with_outcome(self, *outcomes: str, label: str | None = None) -> set[str]:
        return {check_id for check_id, seen in self.outcomes(label).items() if seen in outcomes}

    @cached_property
    def junit(self) -> dict[str, str]:
        """Test name -> passed/failed/error/skipped/not-run, from the JUnit XML (empty if none);
        not-run: a ``<skipped type="not-run">``."""
        assert self.report_dir is not None
        path = self.report_dir / "junit.xml"
        found: dict[str, str] = {}
        if not path.is_file():
            return found
        for case in ET.parse(path).getroot().iter("testcase"):
            kinds = {child.tag: child for child in case}
            state = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
            if state == "skipped" and kinds["skipped"].get("type") == "not-run":
                state = "not-run"
            found[case.attrib["name"]] = {"failure": "failed"}.get(state, state)
        return found

    @cached_property
    def verbose(self) -> dict[str, str]:
        """Node id -> outcome (``passed``, ``not run``...), from the terminal's ``-v`` lines."""
        found: dict[str, str] = {}
        for line in self.stdout.splitlines():
            match = VERBOSE_LINE.match(line)
            if match:
                node = match["id"] or match["x_id"]
                found[node] = (match["outcome"] or match["x_outcome"]).lower()
        return found

    def harness_lines(self) -> list[str]:
        """The harness's one-line messages, but for the note that it reaped what a killed run
        left (any run may reap: this suite kills one on purpose)."""
        return [
            line
            for line in self.output.splitlines()
            if line.startswith("harness: ") and not line.startswith(REAPED_NOTE)
        ]

    def created(self, image_id: str | None = None) -> list[ContainerRecord]:
        if image_id is None:
            return self.containers
        return [r for r in self.containers if r.inspect and r.inspect.get("Image") == image_id]

    def files_with(self, needle: str) -> list[str]:
        """Which of the terminal, stderr and the files it wrote hold ``needle``."""
        found = [name for name, text in (("stdout", self.stdout), ("stderr", self.stderr)) if needle in text]
        if self.report_dir is not None and self.report_dir.is_dir():
            for path in sorted(self.report_dir.rglob("*")):
                if path.is_file() and needle in path.read_text(errors="replace"):
                    found.append(str(path))
        return found


class _Placeholders(Mapping[str, Any]):
    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def __getitem__(self, key: str) -> Any:
        if key in self.handle.values:
            return self.handle.values[key]
        if key == "dir":
            return str(self.handle.dir)
        return self.handle.ctx.resources.placeholder(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class Context:
    """What every run and scenario shares: the engine, its watch, the lazy resources."""

    def __init__(self, watch: EngineWatch, resources: Any, base: Path) -> None:
        self.watch = watch
        self.resources = resources
        self.base = base
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def client(self) -> docker.DockerClient:
        return engine.client(timeout=120)

    def _new_dir(self, name: str) -> Path:
        with self._lock:
            unique, n = name, 1
            while unique in self._names:
                n += 1
                unique = f"{name}-{n}"
            self._names.add(unique)
        path = self.base / re.sub(r"[^\w.-]", "_", unique)
        path.mkdir(parents=True)
        return path

    def launch(self, run: Run) -> Handle:
        handle = Handle(run, self, self._new_dir(run.name))
        (handle.dir / "tmp").mkdir()
        handle.cwd.mkdir(parents=True, exist_ok=True)
        if run.prepare is not None:
            handle.values.update(run.prepare(handle) or {})
        files = dict(run.files)
        if run.pause_at is not None:
            files["work/conftest.py"] = files.get("work/conftest.py", "") + PAUSE_CONFTEST
        for relative, text in files.items():
            path = handle.dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        args = [handle.format(arg) for arg in run.args]
        defaults = [*(["-v"] if run.verbose else []), "-p", "no:cacheprovider"]
        if run.report is not None:
            defaults += [f"--conformance-report={run.report}", f"--junitxml={run.report}/junit.xml"]
        command = [sys.executable, "-m", "pytest", *defaults, *args]
        if run.ignore_sigint:
            command = [sys.executable, "-c", IGNORING_SIGINT, *defaults, *args]
        if run.measure_rss:
            command = [sys.executable, "-c", MEASURING_RSS, str(handle.dir / "rss.json"), *command]
        env = {k: v for k, v in ENVIRONMENT.items() if not k.startswith(("PYTEST_", "PSC_"))}
        env.update(TMPDIR=str(handle.dir / "tmp"), COLUMNS="160", PYTHONDONTWRITEBYTECODE="1")
        if run.password_env:
            env[PASSWORD_ENV] = run.secret
        env.update({k: handle.format(v) for k, v in run.env})
        if run.pause_at is not None:
            env.update(PSC_TEST_PAUSE_AT=run.pause_at, PSC_TEST_PAUSE_DIR=str(handle.dir))
        handle.began, handle.wall_began = time.monotonic(), time.time()
        with (handle.dir / "stdout.txt").open("wb") as out, (handle.dir / "stderr.txt").open("wb") as err:
            handle.process = subprocess.Popen(
                command,
                cwd=handle.cwd,
                env=env,
                stdin=subprocess.PIPE if run.stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                # Each run starts with the default SIGINT disposition, as from a terminal: the
                # suite itself may run as a background job, whose shell ignores SIGINT (the
                # runs that test that case ignore it themselves).
                preexec_fn=_default_sigint,
            )
        if run.stdin is not None:
            assert handle.process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                handle.process.stdin.write(run.stdin.encode())
            handle.process.stdin.close()
        return handle

    def finish(self, handle: Handle, *, expect_leftovers: bool = False) -> Result:
        """Wait for the run (serving its pause), then take stock of what it left."""
        run, process = handle.run, handle.process
        assert process is not None
        deadline = handle.began + run.timeout
        timed_out = False
        cpu_seconds = 0.0
        while process.returncode is None:
            paused = handle.dir / "paused"
            if run.pause_at is not None and paused.exists() and not (handle.dir / "go").exists():
                try:
                    if run.on_pause is not None:
                        run.on_pause(handle)
                except Exception as exc:
                    handle.facts["pause_error"] = exc
                (handle.dir / "go").touch()
            if time.monotonic() > deadline and not timed_out:
                timed_out = True
                process.kill()
            # wait4: its own CPU time (and that of its waited-for children, xdist workers).
            try:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            except ChildProcessError:  # already waited for (Popen.poll in a condition)
                break
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                cpu_seconds = usage.ru_utime + usage.ru_stime
            else:
                time.sleep(0.05)
        ended = time.time()
        seconds = time.monotonic() - handle.began
        containers = handle.containers()
        client = self.client()
        try:
            left = [] if expect_leftovers else self._leftovers(client, containers)
            volumes_left = [] if expect_leftovers else _volumes_left(client, containers)
            images_left = []
            for ref in (handle.format(r) for r in run.remove_images):
                with contextlib.suppress(docker.errors.ImageNotFound):
                    client.images.remove(ref, force=True)
                    images_left.append(ref)
        finally:
            client.close()
        rss_file = handle.dir / "rss.json"
        result = Result(
            run=run,
            returncode=process.returncode,
            stdout=handle.output(),
            stderr=(handle.dir / "stderr.txt").read_text(errors="replace"),
            seconds=seconds,
            dir=handle.dir,
            cwd=handle.cwd,
            pid=handle.pid,
            began=handle.wall_began,
            ended=ended,
            containers=containers,
            containers_left=left,
            volumes_left=volumes_left,
            # pytest-xdist makes pytest's own base temporary directory there: not the harness's.
            tmp_left=sorted(
                p.name for p in (handle.dir / "tmp").iterdir() if not p.name.startswith("pytest-of-")
            ),
            images_left=images_left,
            peak_rss_kib=json.loads(rss_file.read_text()) if rss_file.exists() else None,
            facts=handle.facts,
            timed_out=timed_out,
            cpu_seconds=cpu_seconds,
        )
        if run.after is not None:
            run.after(handle, result)
        return result

    def _leftovers(self, client: docker.DockerClient, containers: list[ContainerRecord]) -> list[str]:
        """Its containers still in the engine after it ended; removed here, so none outlives the suite."""
        # The harness removes its containers before it exits: give their events a moment.
        self.watch.wait_for(lambda: all(r.destroyed for r in containers), timeout=3)
        left = []
        for record in containers:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(record.id, force=True, v=True)
                left.append(record.name)
        return left

    def execute(self, run: Run) -> Result:
        return self.finish(self.launch(run))


def _volumes_left(client: docker.DockerClient, containers: list[ContainerRecord]) -> list[str]:
    left = []
    for name in (v for r in containers for v in r.volumes):
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(name).remove(force=True)
            left.append(name)
    return left


class HarnessRuns:
    """The session's harness runs: started together on first use, each read by many tests."""

    def __init__(self, ctx: Context, declared: list[Entry], parallel: int = PARALLEL) -> None:
        self.ctx = ctx
        self.declared = declared
        self.futures: dict[Entry, Future[Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="harness-run")
        self._waiting = ThreadPoolExecutor(max_workers=WAITING, thread_name_prefix="harness-wait")
        self._lock = threading.Lock()
        self.timings: dict[str, tuple[float, float]] = {}  # name -> (start, end), monotonic
        self.cpu: dict[str, float] = {}  # name -> CPU seconds of its harness processes

    def _timed(self, entry: Entry) -> Any:
        began = time.monotonic()
        try:
            if isinstance(entry, Run):
                found = self.ctx.execute(entry)
                self.cpu[entry.name] = found.cpu_seconds
            else:
                found = entry.func(self.ctx)
                self.cpu[entry.name] = sum(r.cpu_seconds for r in found.values())
            return found
        finally:
            self.timings[entry.name] = (began, time.monotonic())

    def _submit(self, entry: Entry) -> Future[Any]:
        if entry not in self.futures:
            pool = self._waiting if entry.waits else self._pool
            self.futures[entry] = pool.submit(self._timed, entry)
        return self.futures[entry]

    def start(self) -> None:
        """Start every declared run, the longest first; each once."""
        with self._lock:
            for declared in sorted(dict.fromkeys(self.declared), key=lambda e: -e.cost):
                self._submit(declared)

    def __call__(self, entry: Entry) -> Any:
        self.start()
        with self._lock:
            if entry not in self.futures:
                raise LookupError(
                    f"{entry.name} is used but not declared: add @pytest.mark.harness({entry.name})"
                )
            future = self.futures[entry]
        try:
            return future.result()
        except pytest.skip.Exception:
            raise
        except Exception as exc:
            raise AssertionError(f"harness run {entry.name} could not be carried out: {exc!r}") from exc

    def summary(self, longest: int = int(os.environ.get("PSC_TEST_TIMINGS", "12"))) -> list[str]:
        if not self.timings:
            return []
        first = min(start for start, _ in self.timings.values())
        last = max(end for _, end in self.timings.values())
        ranked = sorted(self.timings.items(), key=lambda item: item[1][0] - item[1][1])
        busy = sum(end - start for start, end in self.timings.values())
        cpu = sum(self.cpu.values())
        lines = [
            f"harness runs: {len(self.timings)} in {last - first:.1f} s ({busy:.0f} s of runs, "
            f"{cpu:.0f} CPU s in their pytest processes); the longest:"
        ]
        lines += [
            f"  {end - start:6.1f} s {self.cpu.get(name, 0.0):5.1f} CPU s  {name}"
            for name, (start, end) in ranked[:longest]
        ]
        return lines

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self._pool.shutdown(wait=True)
        self._waiting.shutdown(wait=True)
