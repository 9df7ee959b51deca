"""pytest-html hooks: registered only when pytest-html is installed, and on the controller."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import pytest

from . import report as report_

if TYPE_CHECKING:
    from .collector import ReportCollector

HTML_NAME = "conformance.html"


class HtmlHooks:
    def __init__(self, collector: ReportCollector) -> None:
        self.collector = collector

    def pytest_html_report_title(self, report: Any) -> None:
        report.title = "Model conformance report"

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str]) -> None:
        built = self.collector.report or self.collector.build()
        prefix.append(report_.summary_html(built))

    def pytest_html_results_table_html(self, report: pytest.TestReport, data: list[str]) -> None:
        record = getattr(report, "psc_check", None)
        if record is None:
            return
        if report.skipped:
            data.clear()  # not pytest's raw (path, line, reason) tuple: the reason
            data.append(f"<div class='psc-skip-reason'>{escape(record['message'])}</div>")
        data.append(report_.evidence_html(record))
