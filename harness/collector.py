"""Collects one record per check from the test reports and writes the JSON at session finish.

Records travel on the test reports, so that under xdist the controller sees what the
workers observed. A check with no record at the end never ran to an outcome (the run
was interrupted, stopped by its bound, or the check was deselected): it is reported as
``not-run``, and the image can then not be conformant.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from . import report as report_
from .collect import CheckItem, battery_for
from .errors import Nonconformance
from .outcomes import KIND, NOT_EVALUATED, NOT_RUN, NOT_RUN_PREFIX
from .run import ImageRun
from .verdicts import CheckOutcome

JSON_NAME = "conformance.json"


class ReportCollector:
    def __init__(self, runs: dict[str, ImageRun], report_dir: Path, *, writes: bool) -> None:
        self.runs = runs
        self.report_dir = report_dir
        self.writes = writes  # the controller writes; xdist workers only send records
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.interrupted: str | None = None
        self.report: dict[str, Any] | None = None
        self.written: Path | None = None
        self.schema_problems: list[str] = []

    @property
    def not_evaluated(self) -> bool:
        return any(r["outcome"] == CheckOutcome.ERROR for r in self.records.values())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if isinstance(item, CheckItem) and (
            call.when == "call" or (call.when == "setup" and not report.passed)
        ):
            record = self._record(item, report, call.excinfo)
            # Plain data on the report travels from xdist workers to the controller.
            report.psc_check = record  # type: ignore[attr-defined]
            report.psc_run = item.run.observed.snapshot()  # type: ignore[attr-defined]
            if report.skipped:
                # Where a skip is listed (-rs, HTML): the check, not the harness's own code. A
                # check not run is listed as NOT RUN already: its reason alone follows.
                reason = record["message"]
                if record["outcome"] == NOT_RUN:
                    reason = reason.removeprefix(NOT_RUN_PREFIX)
                report.longrepr = (f"{item.run.label}::{item.check.id}", None, reason)  # type: ignore[assignment]
        return report

    def _record(
        self, item: CheckItem, report: pytest.TestReport, excinfo: pytest.ExceptionInfo[BaseException] | None
    ) -> dict[str, Any]:
        error = excinfo.value if excinfo else None
        kind = item.stash.get(KIND, None)
        if report.skipped:
            outcome = CheckOutcome.NOT_RUN if kind == NOT_RUN else CheckOutcome.SKIPPED
            message = str(error) if error is not None else ""
            if isinstance(report.longrepr, tuple):
                message = report.longrepr[2].removeprefix("Skipped: ")
        elif report.failed:
            # Only a finding about the image is a failure; anything else left it unjudged.
            outcome = CheckOutcome.FAILED if isinstance(error, Nonconformance) else CheckOutcome.ERROR
            message = (
                error.describe(with_log=False) if isinstance(error, Nonconformance) else report.longreprtext
            )
            if kind == NOT_EVALUATED:
                outcome = CheckOutcome.ERROR
        else:
            outcome, message = CheckOutcome.PASSED, ""
        return report_.check_record(
            item.check.id,
            item.run.label,
            outcome,
            message,
            item.check.rule,
            report.duration,
            summary=item.check.summary,
            # A check not run has no evidence: what it cited before it stopped (the last /status
            # of a model never ready...) belongs to the check that judged it.
            evidence=[] if outcome == NOT_RUN else [report_.exchange_evidence(e) for e in item.evidence],
            logTail=error.log_tail if isinstance(error, Nonconformance) else None,
            **item.details,
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, "psc_check", None)
        if record is not None:
            key = (record["image"], record["id"])
            earlier = self.records.get(key)
            # One id, two items (never by the harness's own ids): the worse outcome stands.
            worse = earlier is None or (
                CheckOutcome(record["outcome"]).severity >= CheckOutcome(earlier["outcome"]).severity
            )
            if worse:
                self.records[key] = record
            self.snapshots[record["image"]] = report.psc_run

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        why = str(excinfo.value) or "Ctrl-C"
        self.interrupted = self.interrupted or f"the run was interrupted ({why})"

    def stopped(self, why: str) -> None:
        self.interrupted = why

    def build(self) -> dict[str, Any]:
        """The report as it stands: every expected check, with a record or as not-run."""
        snapshots: dict[str, dict[str, Any]] = {}
        records: list[dict[str, Any]] = []
        for label, run in self.runs.items():
            local = run.observed
            # In this process, the run itself is freshest; from xdist workers, their last report.
            snapshots[label] = (
                local.snapshot() if local.load_steps or label not in self.snapshots else self.snapshots[label]
            )
            for check in battery_for(run):
                record = self.records.get((label, check.id))
                if record is None:
                    why = self.interrupted or "the check was not selected (-k, -m or --deselect)"
                    record = report_.check_record(
                        check.id, label, CheckOutcome.NOT_RUN, f"not run: {why}", check.rule
                    )
                records.append(record)
        self.report = report_.build(snapshots, records, self.interrupted)
        return self.report

    @pytest.hookimpl(tryfirst=True)  # before pytest-html writes its page, which shows this report
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.writes:
            return
        if session.exitstatus == pytest.ExitCode.INTERRUPTED and self.interrupted is None:
            self.interrupted = "the run was interrupted"
        report = self.build()
        path = self.report_dir / JSON_NAME
        report_.write_json(report, path)
        self.written = path
        self.schema_problems = report_.validate(report)
