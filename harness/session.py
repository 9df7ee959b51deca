"""The pytest side of a session that checks images: items, run state, reports.

Imported only once images are given, so that merely having the plugin installed costs
little; the work itself is in the core modules (``run``, ``checks``, ``container``, ...).
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from . import checks, images, registry, settings
from . import report as report_
from .cases import discover
from .errors import CheckSkipped, Nonconformance, SetupError
from .options import EXIT_NOT_EVALUATED
from .run import ImageRun, Target

JSON_NAME = "conformance.json"
HTML_NAME = "conformance.html"
STDIN_PASSWORD_KEY = "psc_registry_password"
NOT_EVALUATED = ("psc-outcome", "not-evaluated")
STASH_KEY = pytest.StashKey["HarnessPlugin"]()


def activate(config: pytest.Config, resolved: settings.Settings) -> None:
    """Register the run state and hooks of a session that checks images."""
    targets = [_image_target(ref) for ref in resolved.images] + [_tar_target(path) for path in resolved.tars]
    if config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line(
            "markers", "xdist_group: (pytest-xdist) keeps one image's checks on one worker"
        )
    plugin = HarnessPlugin(config, targets, resolved)
    config.stash[STASH_KEY] = plugin
    config.pluginmanager.register(plugin, "model-conformance")
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (CI cancelling a job) cleans up like Ctrl-C does.
        plugin.previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    if not hasattr(config, "workerinput") and config.pluginmanager.hasplugin("html"):
        # The HTML report is written once, by the controller, through pytest-html.
        if not config.getoption("htmlpath"):
            config.option.htmlpath = str(resolved.report_dir / HTML_NAME)
            config.option.self_contained_html = True
        config.option.css = [*config.getoption("css"), str(Path(__file__).with_name("report.css"))]
        config.pluginmanager.register(HtmlHooks(plugin), "model-conformance-html")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"harness: stopped by signal {signum}")


def _image_target(ref: str) -> Target:
    # A bad target is kept with its error: that image is not evaluated, the others still are.
    try:
        return Target("image", ref, reference=registry.parse_reference(ref))
    except SetupError as exc:
        return Target("image", ref, error=str(exc))


def _tar_target(path: Path) -> Target:
    try:
        return Target("tar", str(path), images.read_tar_manifest(path))
    except SetupError as exc:
        return Target("tar", str(path), error=str(exc))


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


class CheckItem(pytest.Item):
    def __init__(self, *, run: ImageRun, check: checks.Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.check = check
        self.history_start: int | None = None

    def record(
        self, report: pytest.TestReport, excinfo: pytest.ExceptionInfo[BaseException] | None
    ) -> dict[str, Any]:
        """This check's entry in the conformance report, with its evidence."""
        error = excinfo.value if excinfo else None
        if report.skipped:
            outcome = "skipped"
            message = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            message = message.removeprefix("Skipped: ")
        elif report.failed:
            # Only a finding about the image is a failure; anything else left it unjudged.
            outcome = "failed" if isinstance(error, Nonconformance) else "error"
            message = (
                error.describe(with_log=False) if isinstance(error, Nonconformance) else report.longreprtext
            )
        else:
            outcome, message = "passed", ""
        exchanges = self.run.history[self.history_start :] if self.history_start is not None else []
        if (
            not exchanges
            and self.check.id.startswith("status.")
            and self.run.readiness
            and self.run.readiness.last
        ):
            exchanges = [self.run.readiness.last]  # the /status checks judge the answer that made it ready
        return {
            "id": self.check.id,
            "image": self.run.label,
            "outcome": outcome,
            "message": message,
            "specSection": self.check.spec,
            "durationSeconds": round(report.duration, 4),
            "evidence": [report_.exchange_evidence(exchange) for exchange in exchanges],
            "logTail": error.log_tail if isinstance(error, Nonconformance) else None,
        }

    def setup(self) -> None:
        __tracebackhide__ = True
        error: SetupError | None = None
        try:
            self.run.prepare()
            self.config.stash[STASH_KEY].watch(self.run)
            if self.check.needs_container:
                self.run.start()
        except CheckSkipped as exc:
            pytest.skip(str(exc))
        except SetupError as exc:
            error = exc
        if error is not None:
            self.user_properties.append(NOT_EVALUATED)
            # One line, no traceback: the image could not be evaluated, there is no code to debug.
            pytest.fail(f"harness: {error}", pytrace=False)

    def runtest(self) -> None:
        __tracebackhide__ = True
        self.history_start = len(self.run.history)
        error: SetupError | None = None
        try:
            self.check.func(self.run)
        except CheckSkipped as exc:
            pytest.skip(str(exc))
        except SetupError as exc:  # found while the check ran: still no verdict on the image
            error = exc
        if error is not None:
            self.user_properties.append(NOT_EVALUATED)
            pytest.fail(f"harness: {error}", pytrace=False)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, Nonconformance):
            return f"[{self.check.id}] {excinfo.value.describe()}"
        if isinstance(excinfo.value, SetupError):
            return f"harness: {excinfo.value}"  # raised by a check after setup
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # Not the node id's tail: pytest would print the dots of a check id as "::".
        return self.path, None, f"{self.check.id} ({self.run.target.label})"


class ImageBattery(pytest.Collector):
    def __init__(self, *, run: ImageRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run

    def collect(self) -> list[CheckItem]:
        found = None
        if self.run.options.model_data is not None:
            # A bad data directory is reported once the run prepares, as "not evaluated".
            with contextlib.suppress(SetupError):
                found = discover(self.run.options.model_data)
        return [
            CheckItem.from_parent(self, name=check.id, run=self.run, check=check)
            for check in checks.battery(found)
        ]


class HarnessPlugin:
    """Run state of one pytest session: the image runs, and whether any could not be evaluated."""

    def __init__(self, config: pytest.Config, targets: list[Target], resolved: settings.Settings) -> None:
        self.config = config
        self.settings = resolved
        self.runs: dict[str, ImageRun] = {}
        for target in targets:
            label = target.label
            while label in self.runs:
                label += "'"
            self.runs[label] = ImageRun(target, resolved.options, progress=self.show_progress, label=label)
        self.not_evaluated = False
        self._last_progress = 0.0
        self.previous_sigterm: Any = None
        self.spent: dict[str, float] = {}  # seconds spent in each prepared image's checks
        self.watching: tuple[ImageRun, float] | None = None  # the check running now, since when
        self._watchdog: threading.Thread | None = None
        self._stop_watchdog = threading.Event()
        self.run_checks: dict[str, int] = {}
        self.overrun: str | None = None
        # Filled from test reports, so that the controller sees what xdist workers observed.
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.check_records: dict[str, dict[str, Any]] = {}
        self._report: dict[str, Any] | None = None

    def show_progress(self, line: str) -> None:
        """A live progress line for a person watching a long pull or load."""
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is None or hasattr(self.config, "workerinput"):
            return
        now = time.monotonic()
        done = "100.0%" in line
        isatty = getattr(reporter, "isatty", False)  # a method since pytest 8.4.1, a bool before
        tty = bool(isatty() if callable(isatty) else isatty)
        if not done and now - self._last_progress < (0.5 if tty else 5.0):
            return
        self._last_progress = now
        capture = self.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if tty:
                reporter.write(f"\r{line}" + ("\n" if done else ""), flush=True)
            else:
                reporter.write_line(line)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        # xdist workers cannot read the controller's standard input: hand them the password.
        password = self.settings.options.credentials.password if self.settings.options.credentials else None
        if self.settings.password_from_stdin and password:
            node.workerinput[STDIN_PASSWORD_KEY] = password

    def pytest_report_header(self) -> list[str]:
        named = ", ".join(f"{run.target.ref} ({run.target.kind})" for run in self.runs.values())
        return [f"model images: {named}"]

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        head: list[pytest.Item] = []
        tail: list[pytest.Item] = []
        xdist = config.pluginmanager.hasplugin("xdist")
        for label, run in self.runs.items():
            battery = ImageBattery.from_parent(session, name=label, nodeid=label, run=run)
            for item in battery.collect():
                if xdist:
                    item.add_marker(pytest.mark.xdist_group(label))
                (tail if item.check.id.startswith("shutdown.") else head).append(item)
                if item.check.id.startswith("run."):
                    self.run_checks[label] = self.run_checks.get(label, 0) + 1
        if xdist:
            # The author's tests that use the model run on the same worker as its battery.
            labels = list(self.runs)
            for own in items:
                if "model_server" in getattr(own, "fixturenames", ()):
                    callspec = getattr(own, "callspec", None)
                    label = callspec.params.get("model_server", labels[0]) if callspec else labels[0]
                    own.add_marker(pytest.mark.xdist_group(label))
        # The author's own tests use the running model too: they go before the shutdown checks.
        items[:] = head + items + tail

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if isinstance(item, CheckItem) and (
            call.when == "call" or (call.when == "setup" and not report.passed)
        ):
            # Plain data on the report travels from xdist workers to the controller.
            report.psc_check = item.record(report, call.excinfo)  # type: ignore[attr-defined]
            report.psc_run = report_.run_snapshot(item.run)  # type: ignore[attr-defined]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if NOT_EVALUATED in report.user_properties:
            self.not_evaluated = True
        record = getattr(report, "psc_check", None)
        if record is not None:
            self.check_records[report.nodeid] = record
            self.snapshots[record["image"]] = report.psc_run

    def report(self) -> dict[str, Any] | None:
        if self._report is None and self.snapshots:
            # Images in the order they were given, checks in the order they ran.
            ordered = {label: self.snapshots[label] for label in self.runs if label in self.snapshots}
            self._report = report_.build(ordered, list(self.check_records.values()))
        return self._report

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for label, run in self.runs.items():
            if run.metadata_note:
                terminalreporter.write_line(f"{label}: {run.metadata_note}")
            if run.reaped:
                terminalreporter.write_line(
                    f"harness: removed what killed runs left: {', '.join(run.reaped)}"
                )
        if self.overrun:
            terminalreporter.write_line(f"harness: {self.overrun}", red=True)
        if not hasattr(self.config, "workerinput"):
            self.write_json(terminalreporter)
        if self.not_evaluated:
            terminalreporter.write_line(
                f"model conformance: not evaluated (exit code {EXIT_NOT_EVALUATED})", red=True
            )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.close()
        if self.not_evaluated and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            session.exitstatus = EXIT_NOT_EVALUATED

    def pytest_unconfigure(self) -> None:
        self.close()
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)

    def write_json(self, terminalreporter: Any) -> None:
        report = self.report()
        if report is None:
            return
        path = self.settings.report_dir / JSON_NAME
        report_.write_json(report, path)
        terminalreporter.write_line(f"conformance report: {path} (verdict: {report['verdict']})")
        problems = report_.validate(report)
        if problems:  # a harness bug, not the image's: say so rather than hide it
            terminalreporter.write_line(
                f"conformance report does not match its schema: {problems[0]}", red=True
            )
        if not self.config.pluginmanager.hasplugin("html"):
            terminalreporter.write_line("conformance report: HTML not written: pytest-html is not installed")

    def watch(self, run: ImageRun) -> None:
        """Count the time of this (prepared) image's check from now against its bound."""
        self.watching = (run, time.monotonic())
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="psc-harness-watchdog", daemon=True)
            self._watchdog.start()

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        if self.watching is not None:
            run, since = self.watching
            self.spent[run.label] = self.spent.get(run.label, 0.0) + time.monotonic() - since
            self.watching = None

    def _watch(self) -> None:
        # Only the image's own checks count: another image's pull or battery does not.
        while not self._stop_watchdog.wait(0.5):
            current = self.watching
            if current is None:
                continue
            run, since = current
            bound = run.bound(self.run_checks.get(run.label, 0))
            if self.spent.get(run.label, 0.0) + time.monotonic() - since > bound:
                self.overrun = f"{run.label} ran past its bound of {bound:.0f} s and was stopped"
                _thread.interrupt_main()  # pytest then cleans up as after Ctrl-C
                return

    def close(self) -> None:
        self._stop_watchdog.set()
        # Cleaning up is not to be interrupted half way by a second Ctrl-C or SIGTERM.
        blocked = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self._close_runs()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _close_runs(self) -> None:
        for run in self.runs.values():
            run.close()
            for problem in run.cleanup_problems:  # say it: something may be left behind
                sys.stderr.write(f"harness: cleaning up after {run.label} failed: {problem}\n")

    def run_for(self, label: str | None) -> ImageRun:
        if label is None:
            return next(iter(self.runs.values()))
        return self.runs[label]


class HtmlHooks:
    """pytest-html hooks, registered only when pytest-html is installed and on the controller."""

    def __init__(self, plugin: HarnessPlugin) -> None:
        self.plugin = plugin

    def pytest_html_report_title(self, report: Any) -> None:
        report.title = "Model conformance report"

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str]) -> None:
        built = self.plugin.report()
        if built is not None:
            prefix.append(report_.summary_html(built))

    def pytest_html_results_table_html(self, report: pytest.TestReport, data: list[str]) -> None:
        record = getattr(report, "psc_check", None)
        if record is not None:
            data.append(report_.evidence_html(record))
