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
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from . import checks, settings
from .bound import TimeBound
from .collect import Collection, battery_for, keep_ids_as_given
from .collector import ReportCollector
from .compare import Comparator, OutputVerdict
from .htmlreport import HTML_NAME, HtmlHooks
from .options import EXIT_NOT_EVALUATED
from .outcomes import NotRunReporting, OutcomeTranslator
from .run import ImageRun
from .sources import ImageSource, ReferenceSource, TarSource
from .terminal import NotRunListing, TerminalOutput

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
    state.progress = terminal.progress
    state.collector = collector
    run_checks = {
        label: sum(1 for c in battery_for(run) if c.phase == checks.RUN) for label, run in state.runs.items()
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
    if verdict == "error":
        return EXIT_NOT_EVALUATED
    if verdict == "nonconformant" or pytest_code == pytest.ExitCode.TESTS_FAILED:
        return int(pytest.ExitCode.TESTS_FAILED)
    if verdict == "incomplete":
        return int(pytest.ExitCode.INTERRUPTED)  # some check never ran: never a pass
    return int(pytest_code)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


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
        self.progress: Any = None
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
            self.runs[label] = ImageRun(source, options, session_id=self.session_id, progress=self._progress)
        self.previous_sigterm: Any = None
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (CI cancelling a job) cleans up like Ctrl-C does.
            self.previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)

    def _progress(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

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
        if self.bound is not None:
            self.bound.close()
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)
            self.previous_sigterm = None

    def close(self) -> None:
        if self.bound is not None:
            self.bound.close()
        # Cleaning up is not to be interrupted half way by a second Ctrl-C or SIGTERM.
        blocked = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            for run in self.runs.values():
                run.close()
                for problem in run.cleanup_problems:  # say it: something may be left behind
                    sys.stderr.write(f"harness: cleaning up after {run.label} failed: {problem}\n")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
