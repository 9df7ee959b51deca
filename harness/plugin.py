"""pytest adapter: options in, one battery of check items per image, outcomes and exit code out.

The work itself is in the core modules (``run``, ``checks``, ``container``, ``images``),
which know nothing of pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from . import checks, images, settings
from .errors import CheckSkipped, Nonconformance, SetupError
from .run import ImageRun, JobResult, Target

EXIT_NOT_EVALUATED = 6  # the image could not be evaluated at all: not a verdict on it
NOT_EVALUATED = ("psc-outcome", "not-evaluated")
STASH_KEY = pytest.StashKey["HarnessPlugin"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    resolved = settings.resolve(config)
    if not resolved.active:
        if resolved.options.model_data or resolved.options.model_yaml:
            raise pytest.UsageError(
                "--model-data and --model-yaml need an image: give --model-image or --model-tar"
            )
        return
    try:
        targets = [Target("image", ref) for ref in resolved.images]
        targets += [Target("tar", str(path), images.read_tar_manifest(path)) for path in resolved.tars]
    except SetupError as exc:
        pytest.exit(f"harness: {exc}", returncode=EXIT_NOT_EVALUATED)
    if config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line(
            "markers", "xdist_group: (pytest-xdist) keeps one image's checks on one worker"
        )
    plugin = HarnessPlugin(config, targets, resolved)
    config.stash[STASH_KEY] = plugin
    config.pluginmanager.register(plugin, "model-conformance")


class CheckItem(pytest.Item):
    def __init__(self, *, run: ImageRun, check: checks.Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.check = check

    def setup(self) -> None:
        __tracebackhide__ = True
        error: SetupError | None = None
        try:
            self.run.prepare()
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
        try:
            self.check.func(self.run)
        except CheckSkipped as exc:
            pytest.skip(str(exc))

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
        if self.run.options.model_data is not None and self.run.options.model_data.is_dir():
            from .cases import discover

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
            self.runs[label] = ImageRun(target, resolved.options)
        self.not_evaluated = False

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
        # The author's own tests use the running model too: they go before the shutdown checks.
        items[:] = head + items + tail

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if NOT_EVALUATED in report.user_properties:
            self.not_evaluated = True

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for label, run in self.runs.items():
            if run.metadata_note:
                terminalreporter.write_line(f"{label}: {run.metadata_note}")
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

    def close(self) -> None:
        for run in self.runs.values():
            run.close()

    def run_for(self, label: str | None) -> ImageRun:
        if label is None:
            return next(iter(self.runs.values()))
        return self.runs[label]


# -- public fixtures -----------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    plugin = metafunc.config.stash.get(STASH_KEY, None)
    if plugin is not None and len(plugin.runs) > 1 and "model_server" in metafunc.fixturenames:
        metafunc.parametrize("model_server", list(plugin.runs), indirect=True, scope="session")


@pytest.fixture(scope="session")
def model_server(request: pytest.FixtureRequest) -> ImageRun:
    """The image under test, started once and ready: its ``container.http``, ``metadata``, ``run_job``."""
    plugin = request.config.stash.get(STASH_KEY, None)
    if plugin is None:
        pytest.skip("no model image given (--model-image or --model-tar)")
    run = plugin.run_for(getattr(request, "param", None))
    if run.shutdown is not None:
        run.restart()
    try:
        run.require_ready()
    except CheckSkipped as exc:
        pytest.skip(str(exc))
    return run


@pytest.fixture
def model_job(model_server: ImageRun) -> Callable[..., JobResult]:
    """Run one job: ``model_job({"input.txt": b"..."})`` returns the /run exchange and the output files."""

    def run_job(inputs: Mapping[str, bytes | Path], *, payload: dict[str, object] | None = None) -> JobResult:
        return model_server.run_job(inputs, name="author", payload=payload)

    return run_job
