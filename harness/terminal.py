"""What the harness prints: the header, live upload progress, and the verdict at the end.

Only output: it reads the run state and the report collector, and decides nothing.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import pytest

from .options import EXIT_NOT_EVALUATED
from .outcomes import NOT_RUN_CATEGORY, NOT_RUN_LETTER, NOT_RUN_PREFIX, NOT_RUN_WORD
from .verdicts import CheckOutcome, Verdict

if TYPE_CHECKING:
    from .collector import ReportCollector
    from .runtime import Progress
    from .session import HarnessSession


class TerminalOutput:
    def __init__(self, config: pytest.Config, state: HarnessSession, collector: ReportCollector) -> None:
        self.config = config
        self.state = state
        self.collector = collector
        self._last_progress = 0.0
        self._on_own_line = False

    def _reporter(self) -> Any:
        if hasattr(self.config, "workerinput"):
            return None
        return self.config.pluginmanager.getplugin("terminalreporter")

    def progress(self, what: str, seen: Progress) -> None:
        """A live progress line for a person watching a long pull or load."""
        reporter = self._reporter()
        if reporter is None:
            return
        now = time.monotonic()
        line, done = seen.line(what), seen.finished
        isatty = getattr(reporter, "isatty", False)  # a method since pytest 8.4.1, a bool before
        tty = bool(isatty() if callable(isatty) else isatty)
        if not done and now - self._last_progress < (0.5 if tty else 5.0):
            return
        self._last_progress = now
        capture = self.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            # On its own line, so that pytest's own progress line stays whole.
            if tty:
                if not self._on_own_line:
                    reporter.ensure_newline()  # pytest's own progress line stays whole
                    self._on_own_line = True
                reporter.write(f"\r{line}" + ("\n" if done else ""), flush=True)
                self._on_own_line = not done
            else:
                reporter.ensure_newline()
                reporter.write_line(line)

    def pytest_report_header(self) -> list[str]:
        named = ", ".join(f"{run.source.reference} ({run.source.source})" for run in self.state.runs.values())
        from .dockerengine import describe  # where the engine is: its port is published there

        return [f"model images: {named}", describe(self.state.settings.options.engine_host)]

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        write = terminalreporter.write_line
        for label, run in self.state.runs.items():
            if run.observed.model_yaml_note:
                write(f"{label}: {run.observed.model_yaml_note}")
            if run.observed.reaped:
                write(f"harness: removed what killed runs left: {', '.join(run.observed.reaped)}")
        if self.state.overrun:
            write(f"harness: {self.state.overrun}", red=True)
        report = self.collector.report
        if report is None:
            return
        for entry in report["images"]:
            for warning in entry.get("warnings") or ():
                write(f"{entry['image']['label']}: warning: {warning}", yellow=True)
        if self.collector.written is not None:
            write(f"conformance report: {self.collector.written} (verdict: {report['verdict']})")
        for problem in self.collector.schema_problems[:1]:  # a harness bug, not the image's: say so
            write(f"conformance report does not match its schema: {problem}", red=True)
        if not self.config.pluginmanager.hasplugin("html"):
            write("conformance report: HTML not written: pytest-html is not installed")
        verdict = report["verdict"]
        if verdict == Verdict.INCOMPLETE:
            not_run = sum(
                1 for i in report["images"] for c in i["checks"] if c["outcome"] == CheckOutcome.NOT_RUN
            )
            total = sum(len(i["checks"]) for i in report["images"])
            why = report.get("interrupted") or "checks were deselected"
            write(f"model conformance: INCOMPLETE, {not_run} of {total} checks did not run ({why})", red=True)
        elif verdict == Verdict.ERROR:
            write(f"model conformance: not evaluated (exit code {EXIT_NOT_EVALUATED})", red=True)
        else:
            write(
                f"model conformance: {verdict.upper()}",
                green=verdict == Verdict.CONFORMANT,
                red=verdict != Verdict.CONFORMANT,
            )


class NotRunListing:
    """With ``-rs`` (or ``-ra``, ``-rA``, ``-rn``), the checks not run, each with its reason.

    pytest's short summary lists only its own categories: these follow it, as it would list them.
    """

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # around pytest's own: after its short summary
    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> Any:
        result = yield
        chars = getattr(terminalreporter, "reportchars", "")
        listed = "s" in chars or NOT_RUN_LETTER in chars
        reports = terminalreporter.stats.get(NOT_RUN_CATEGORY, [])
        if reports and listed and not config.getoption("no_summary", False):
            terminalreporter.write_sep("=", "checks not run", yellow=True, bold=True)
            for report in reports:
                reason = report.psc_check["message"].removeprefix(NOT_RUN_PREFIX)
                terminalreporter.write(NOT_RUN_WORD, yellow=True)
                terminalreporter.line(f" {config.cwd_relative_nodeid(report.nodeid)} - {reason}")
        return result
