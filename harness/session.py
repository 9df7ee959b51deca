"""The run state of a pytest session that checks images, and the wiring of its parts.

Imported only once images are given, so that merely having the plugin installed costs
little. Each part is its own plugin object: ``Collection`` (the items), ``OutcomeTranslator``
(exceptions into outcomes), ``TimeBound`` (the per-image bound), ``ReportCollector`` (the
JSON), ``TerminalOutput`` and ``HtmlHooks`` (what a person sees). ``HarnessSession`` holds
the image runs and cleans up after them whatever happens.
"""

from __future__ import annotations

import signal
import sys
import threading
import uuid
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from . import settings
from .battery import Phase
from .bound import TimeBound
from .collect import Collection, battery_for, keep_ids_as_given
from .collector import ReportCollector
from .compare import Comparator, OutputVerdict
from .dockerengine import ImageSource, ReferenceSource, TarSource
from .htmlreport import HTML_NAME, HtmlHooks
from .options import EXIT_NOT_EVALUATED
from .outcomes import NotRunReporting, OutcomeTranslator
from .run import ImageRun
from .terminal import NotRunListing, TerminalOutput
from .verdicts import Verdict

STDIN_PASSWORD_KEY = "psc_registry_password"
STASH_KEY = pytest.StashKey["HarnessSession"]()


def activate(config: pytest.Config, resolved: settings.Settings) -> None:
    """Register the run state and the hooks of a session that checks images."""
    state = HarnessSession(config, resolved)
    config.stash[STASH_KEY] = state
    pm = config.pluginmanager
    worker = hasattr(config, "workerinput")
    collector = ReportCollector(state.runs, resolved.report_dir, writes=not worker)
    terminal = TerminalOutput(config, state, collector)
    for run in state.runs.values():
        run.prepared.progress = terminal.progress  # one way: the runs report, the terminal shows
    state.collector = collector
    run_checks = {
        label: sum(1 for c in battery_for(run) if c.phase is Phase.RUN) for label, run in state.runs.items()
    }
    state.bound = TimeBound(run_checks, state.stopped)
    keep_ids_as_given(config, list(state.runs))
    pm.register(state, "model-conformance")
    pm.register(Collection(state.runs), "model-conformance-collection")
    pm.register(OutcomeTranslator(), "model-conformance-outcomes")
    pm.register(NotRunReporting(config), "model-conformance-not-run")
    pm.register(state.bound, "model-conformance-bound")
    pm.register(collector, "model-conformance-report")
    pm.register(terminal, "model-conformance-terminal")
    pm.register(NotRunListing(), "model-conformance-not-run-listing")
    if pm.hasplugin("xdist"):
        from .distribute import XdistHooks

        pm.register(XdistHooks(list(state.runs)))
    if not worker and pm.hasplugin("html"):
        # The HTML report is written once, by the controller, through pytest-html.
        if not config.getoption("htmlpath"):
            config.option.htmlpath = str(resolved.report_dir / HTML_NAME)
            config.option.self_contained_html = True
        config.option.css = [*config.getoption("css"), str(Path(__file__).with_name("report.css"))]
        pm.register(HtmlHooks(collector), "model-conformance-html")


def exit_code(verdict: str, pytest_code: int) -> int:
    """The run's exit code from the report's verdict; an author's own failed test still fails it."""
    if verdict == Verdict.ERROR:
        return EXIT_NOT_EVALUATED
    if verdict == Verdict.NONCONFORMANT or pytest_code == pytest.ExitCode.TESTS_FAILED:
        return int(pytest.ExitCode.TESTS_FAILED)
    if verdict == Verdict.INCOMPLETE:
        return int(pytest.ExitCode.INTERRUPTED)  # some check never ran: never a pass
    return int(pytest_code)


class Interruption:
    """Ctrl-C (SIGINT) and SIGTERM while images are checked: the run stops, its cleanup does not.

    The handler raises ``KeyboardInterrupt`` as Python's own does for SIGINT, but that
    exception can be lost: Python runs a handler in whatever code the main thread executes
    next, and an exception raised in a finalizer is discarded (silently, in the ``close()``
    that an io object gets when it is dropped). So the signal is also noted, and raised
    again at the next boundary of a test: a run never goes on as if it had not come.
    While the session cleans up, a signal is only noted. Blocking it in this thread would
    not do: the kernel then hands it to another thread of the run (a container's exit
    watcher, the stats sampler), and Python runs the handler here all the same.
    """

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal
        self.seen = False  # pytest saw the KeyboardInterrupt: the session ends as interrupted
        self.holding = False  # cleaning up: note, do not raise
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            # SIGTERM (CI cancelling a job) cleans up like Ctrl-C does. A SIGINT that is
            # ignored (a shell's background job) stays so, and another's handler is kept.
            if signum == signal.SIGTERM or signal.getsignal(signum) is signal.default_int_handler:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signum
        if not self.holding:
            raise self._exception(signum)

    @staticmethod
    def _exception(signum: int) -> KeyboardInterrupt:
        return (
            KeyboardInterrupt()
            if signum == signal.SIGINT
            else KeyboardInterrupt(f"stopped by signal {signum}")
        )

    def raise_if_lost(self) -> None:
        """Raise again a signal whose ``KeyboardInterrupt`` never reached pytest."""
        if self.received is not None and not self.seen and not self.holding:
            raise self._exception(self.received)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


def stdin_password(config: pytest.Config) -> str | None:
    """The password piped to --registry-password-stdin: read once, by the controller."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return workerinput.get(STDIN_PASSWORD_KEY)  # type: ignore[no-any-return]
    if not config.getoption("registry_password_stdin", False):
        return None
    capture = config.pluginmanager.getplugin("capturemanager")
    # pytest has replaced standard input by now: read the real one with capturing paused.
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    try:
        return sys.stdin.readline().rstrip("\r\n") or None
    finally:
        if capture is not None:
            capture.resume_global_capture()


def author_comparator(config: pytest.Config) -> Comparator:
    """The authors' ``pytest_model_compare_output`` hooks (conftest.py), as the core's plain callable."""
    hook = config.hook.pytest_model_compare_output

    def compare(
        *, name: str, expected: bytes, actual: bytes, media_type: str, case_name: str, case_dir: Path
    ) -> OutputVerdict | tuple[bool, str] | None:
        return hook(  # type: ignore[no-any-return]
            name=name,
            expected=expected,
            actual=actual,
            media_type=media_type,
            case_name=case_name,
            case_dir=case_dir,
        )

    return compare


class HarnessSession:
    """The image runs of one pytest session, and their cleanup."""

    def __init__(self, config: pytest.Config, resolved: settings.Settings) -> None:
        self.config = config
        self.settings = resolved
        self.session_id = uuid.uuid4().hex[:12]
        self.collector: ReportCollector | None = None
        self.bound: TimeBound | None = None
        self.overrun: str | None = None
        self.runs: dict[str, ImageRun] = {}
        options = replace(resolved.options, comparator=author_comparator(config))
        sources: list[ImageSource] = [ReferenceSource(ref, resolved.options) for ref in resolved.images]
        sources += [TarSource(path, resolved.options, self.session_id) for path in resolved.tars]
        for source in sources:
            label = source.label
            while label in self.runs:  # the same file name in two directories
                label += "'"
            source.label = label
            self.runs[label] = ImageRun(source, options, session_id=self.session_id)
        self.interruption = Interruption()

    def stopped(self, why: str) -> None:
        self.overrun = why
        if self.collector is not None:
            self.collector.stopped(why)

    def run_for(self, label: str | None) -> ImageRun:
        if label is None:
            return next(iter(self.runs.values()))
        return self.runs[label]

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        # xdist workers cannot read the controller's standard input: hand them the password.
        credentials = self.settings.options.credentials
        if self.settings.password_from_stdin and credentials is not None:
            node.workerinput[STDIN_PASSWORD_KEY] = credentials.password

    # A signal whose KeyboardInterrupt was lost is raised again at the next boundary, where
    # pytest handles it as any Ctrl-C: the test under way does not count, the rest do not run.

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self) -> Generator[None, None, None]:
        return (yield from self._interruptible())

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self) -> Generator[None, None, None]:
        return (yield from self._interruptible())

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self) -> Generator[None, None, None]:
        return (yield from self._interruptible())

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self) -> Generator[None, object, object]:
        result = yield
        self.interruption.raise_if_lost()  # lost after the last test: the run was interrupted all the same
        return result

    def _interruptible(self) -> Generator[None, None, None]:
        self.interruption.raise_if_lost()
        yield
        self.interruption.raise_if_lost()

    def pytest_keyboard_interrupt(self) -> None:
        self.interruption.seen = True

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.close()
        collector = self.collector
        if session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return  # interrupted, a usage error, pytest's own failure: its code stands
        if collector is not None and collector.report is not None:
            # The exit code says what the report says: one source for both.
            session.exitstatus = exit_code(collector.report["verdict"], session.exitstatus)
        elif collector is not None and collector.not_evaluated:  # an xdist worker writes no report
            session.exitstatus = EXIT_NOT_EVALUATED

    def pytest_unconfigure(self) -> None:
        self.close()
        self.interruption.restore()

    def close(self) -> None:
        # Cleaning up is not to be interrupted half way by a second Ctrl-C or SIGTERM (nor by
        # the time bound, closed first): they are noted, and the session ends as it would.
        self.interruption.holding = True
        try:
            if self.bound is not None:
                self.bound.close()
            for run in self.runs.values():
                run.close()
                for problem in run.cleanup_problems:  # say it: something may be left behind
                    sys.stderr.write(f"harness: cleaning up after {run.label} failed: {problem}\n")
        finally:
            self.interruption.holding = False
