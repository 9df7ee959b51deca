"""The one place where harness exceptions become pytest outcomes, for every test alike.

A finding about the image is an ``AssertionError`` (a failure, left as it is); a check that
does not apply is a skip; a check that could not run because of an earlier finding is a
skip that says "not run: ..."; an image that could not be evaluated at all is an error of
one line, ``harness: ...``, with no traceback to read.

A check not run stays a skip for pytest (it fails nothing by itself: the verdict sets the
exit code), but is reported as what it is: "not run" in the terminal and a ``<skipped>`` of
its own type in the JUnit XML (``NotRunReporting``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from _pytest.junitxml import xml_key  # junitxml has no public hook to give a skip its type

from .errors import CheckSkipped, NotRun, SetupError

# How a test ended in the harness's terms, when pytest's own words are not enough.
KIND = pytest.StashKey[str]()
NOT_EVALUATED = "not-evaluated"
NOT_RUN = "not-run"
# pytest's category for them: its summary line counts them apart ("1 failed, 3 passed, 12 not run").
NOT_RUN_CATEGORY = "not run"
NOT_RUN_LETTER = "n"  # also what ``-rn`` lists, besides ``-rs``, ``-ra`` and ``-rA``
NOT_RUN_WORD = "NOT RUN"
NOT_RUN_PREFIX = "not run: "
JUNIT_NOT_RUN_TYPE = "not-run"
JUNIT_NOT_RUN_PROPERTY = "psc_not_run"  # a testsuite property: how many <skipped> are checks not run


def is_not_run(report: pytest.TestReport) -> bool:
    """A check's report that says it could not run because of an earlier finding."""
    record = getattr(report, "psc_check", None)  # set by the collector, also on xdist workers
    return bool(report.skipped and isinstance(record, dict) and record.get("outcome") == NOT_RUN)


def translate(item: pytest.Item, exc: BaseException) -> BaseException:
    if isinstance(exc, NotRun):
        item.stash[KIND] = NOT_RUN
        return pytest.skip.Exception(str(exc))
    if isinstance(exc, CheckSkipped):
        return pytest.skip.Exception(str(exc))
    if isinstance(exc, SetupError):
        item.stash[KIND] = NOT_EVALUATED
        return pytest.fail.Exception(f"harness: {exc}", pytrace=False)
    return exc


class OutcomeTranslator:
    """Wraps the setup and call of every test: the harness's fixtures raise the same exceptions."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        return (yield from _translating(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        return (yield from _translating(item))


def _translating(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except Exception as exc:
        translated = translate(item, exc)
        if translated is exc:
            raise
        raise translated from None


class NotRunReporting:
    """Checks not run told apart from skips wherever pytest reports them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.junit_not_run = 0

    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[str, str, Any] | None:
        if is_not_run(report):
            return NOT_RUN_CATEGORY, NOT_RUN_LETTER, (NOT_RUN_WORD, {"yellow": True})
        return None

    @pytest.hookimpl(trylast=True)  # after junitxml added the testcase's <skipped>
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not is_not_run(report):
            return
        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        self.junit_not_run += 1
        for node in xml.node_reporter(report).nodes:
            if node.tag == "skipped":
                node.set("type", JUNIT_NOT_RUN_TYPE)
                node.set("message", report.psc_check["message"])

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes its file
    def pytest_sessionfinish(self) -> None:
        xml = self.config.stash.get(xml_key, None)
        if xml is not None:
            # JUnit has no "not run": the testsuite's skipped count includes them, this says how many.
            xml.add_global_property(JUNIT_NOT_RUN_PROPERTY, self.junit_not_run)
