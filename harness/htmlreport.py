"""pytest-html hooks: registered only when pytest-html is installed, and on the controller."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import pytest

from . import report as report_
from .outcomes import NOT_RUN, is_not_run

if TYPE_CHECKING:
    from .collector import ReportCollector

HTML_NAME = "conformance.html"
NOT_RUN_CLASS = "psc-not-run"  # on the result cell of a check not run
NOT_RUN_LABEL = "Not run"

# pytest-html 4 filters and counts a fixed set of results: to it, a check not run is
# "Skipped" (anything else would hide its row). This shows it as what it is once the page
# has drawn its table (and again each time a sort or a filter redraws it), and makes the
# "Not run" box at the top show or hide those rows.
NOT_RUN_SCRIPT = f"""<script>
(() => {{
  const mark = () => {{
    for (const cell of document.querySelectorAll('td.col-result.{NOT_RUN_CLASS}')) {{
      if (cell.textContent !== '{NOT_RUN_LABEL}') cell.textContent = '{NOT_RUN_LABEL}';
      const row = cell.closest('tbody');
      if (row && !row.classList.contains('{NOT_RUN}')) {{
        row.classList.remove('skipped');
        row.classList.add('{NOT_RUN}');
      }}
    }}
  }};
  new MutationObserver(mark).observe(document.body, {{ childList: true, subtree: true }});
  document.addEventListener('DOMContentLoaded', () => {{
    mark();
    const box = document.querySelector('input[data-test-result="{NOT_RUN}"]');
    const hide = () => document.body.classList.toggle('psc-hide-not-run', !box.checked);
    if (box) box.addEventListener('change', hide);
  }});
}})();
</script>"""


class HtmlHooks:
    def __init__(self, collector: ReportCollector) -> None:
        self.collector = collector
        self.data: Any = None  # pytest-html's report data: its result counts
        self.not_run_rows = 0
        self.counted = False

    def pytest_html_report_title(self, report: Any) -> None:
        report.title = "Model conformance report"
        self.data = report

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str]) -> None:
        built = self.collector.report or self.collector.build()
        prefix.append(report_.summary_html(built))
        prefix.append(NOT_RUN_SCRIPT)
        self._count_not_run_apart()

    def _count_not_run_apart(self) -> None:
        """The filter boxes at the top: "N Not run" beside "N Skipped", no longer inside it."""
        outcomes = getattr(self.data, "outcomes", None)
        if self.counted or not isinstance(outcomes, dict) or "skipped" not in outcomes:
            return
        self.counted = True
        entries = list(outcomes.items())
        outcomes.clear()  # the same dict, in a new order: "Not run" right after "Skipped"
        for key, value in entries:
            outcomes[key] = value
            if key == "skipped":
                value["value"] -= self.not_run_rows
                outcomes[NOT_RUN] = {"label": NOT_RUN_LABEL, "value": self.not_run_rows}

    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        if is_not_run(report) and cells:
            # The text stays what pytest-html filters on; the script shows "Not run".
            cells[0] = f'<td class="col-result {NOT_RUN_CLASS}">Skipped</td>'
            self.not_run_rows += 1

    def pytest_html_results_table_html(self, report: pytest.TestReport, data: list[str]) -> None:
        record = getattr(report, "psc_check", None)
        if record is None:
            return
        if report.skipped:
            data.clear()  # not pytest's raw (path, line, reason) tuple: the reason
            data.append(f"<div class='psc-skip-reason'>{escape(record['message'])}</div>")
        data.append(report_.evidence_html(record))
