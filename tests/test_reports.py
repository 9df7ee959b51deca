"""The JSON and HTML conformance reports, from real harness runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from harness import report
from sample_models import build
from tests import runs
from tests.expect import ALL_CHECKS, CHECKS_MINI, CHECKS_WITHOUT_DATA, RUN_JOBS, RUN_JOBS_MINI
from tests.harness_runs import HarnessRuns, Result

pytestmark = pytest.mark.docker

ARTIFACTS = build.ROOT / "reports" / "test-artifacts"


def assert_steps_in_order(document: dict[str, Any]) -> None:
    steps = document["loadSteps"]
    assert [s["step"] for s in steps] == sorted(s["step"] for s in steps)
    starts = [datetime.fromisoformat(s["startedAt"]) for s in steps]
    assert starts == sorted(starts)
    percentages = [s["percentage"] for s in steps]
    assert percentages == sorted(percentages)


@pytest.mark.harness(runs.CONFORMANT)
def test_json_of_a_conformant_run(harness: HarnessRuns) -> None:
    result = harness(runs.CONFORMANT)
    document = result.json
    assert report.validate(document) == []
    assert document["verdict"] == "conformant"
    image = document["containerImage"]
    assert (image["loadStatus"], image["loadPercentage"], image["uploadPercentage"]) == ("Ready", 100, 100)
    assert image["containerImageSize"] > 10 * 2**20
    assert "technicalInformation" not in image
    assert [s["stepName"] for s in document["loadSteps"]] == [
        "Uploading container image",
        "Loading model 'langid'",
        "Checking status endpoint",
        "Ready",
    ]
    checking = document["loadSteps"][2]["details"]
    assert checking["polls"] >= 1 and checking["readySeconds"] >= checking["firstAnswerSeconds"] > 0
    assert_steps_in_order(document)
    assert {c["outcome"] for c in document["checks"]} == {"passed"}
    assert {c["id"] for c in document["checks"]} == ALL_CHECKS
    assert len(document["runSteps"]) == RUN_JOBS
    english = next(job for job in document["runSteps"] if job["job"] == "english")
    assert [s["stepName"] for s in english["steps"]] == [
        "Loading model",
        "Fetching inputs",
        "Submitting inputs",
        "Recording outputs",
        "Completed",
    ]
    assert document["image"]["source"] == "tag"
    assert document["image"]["reference"] == runs.LANGID
    assert document["image"]["id"] == runs_image_id(result)
    assert document["image"]["modelYaml"].endswith(":/opt/app/model.yaml")
    assert document["image"]["engineVersion"]
    # With one image, its entry is mirrored at the top level.
    (entry,) = document["images"]
    assert entry["checks"] == document["checks"] and entry["runSteps"] == document["runSteps"]


def runs_image_id(result: Result) -> str:
    (container,) = result.containers
    assert container.inspect is not None
    return str(container.inspect["Image"])


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-status-no-statuscode"])
def test_json_of_a_nonconformant_run(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-status-no-statuscode"])
    document = result.json
    assert result.returncode == 1
    assert report.validate(document) == []
    assert document["verdict"] == "nonconformant"
    failed = {c["id"]: c for c in document["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"status.schema"}
    assert "'statusCode' is a required property" in failed["status.schema"]["message"]
    assert document["containerImage"]["loadStatus"] == "Ready"
    assert_steps_in_order(document)


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-never-ready"])
def test_json_of_a_model_never_ready(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-never-ready"])
    document = result.json
    assert result.returncode == 1
    assert report.validate(document) == []
    assert document["verdict"] == "nonconformant"
    image = document["containerImage"]
    assert image["loadStatus"] == "Failed" and image["loadPercentage"] < 100
    # Why: no 200 within the timeout (the last poll may be cut by the deadline, so its 503 is
    # not always the last thing seen).
    assert "/status not 200 within 6 s" in image["technicalInformation"]
    assert max(s["percentage"] for s in document["loadSteps"]) < 100
    assert_steps_in_order(document)
    failed = next(c for c in document["checks"] if c["id"] == "status.ready")
    assert failed["outcome"] == "failed" and failed["rule"] == "docs/contract.md#status"
    assert document["runSteps"] == []  # no /run job was sent to a model that never became ready


@pytest.mark.harness(runs.UNKNOWN_IMAGE)
def test_json_of_an_image_not_evaluated(harness: HarnessRuns) -> None:
    result = harness(runs.UNKNOWN_IMAGE)
    assert result.returncode == 6
    assert report.validate(result.json) == []
    assert result.json["verdict"] == "error"
    assert "not in the Docker engine" in result.json["containerImage"]["technicalInformation"]


@pytest.mark.harness(runs.TWO_IMAGES, runs.MISSING_TAR_BESIDE_GOOD)
def test_verdict_is_the_worst_over_images(harness: HarnessRuns) -> None:
    for run, worst in ((runs.TWO_IMAGES, "nonconformant"), (runs.MISSING_TAR_BESIDE_GOOD, "error")):
        document = harness(run).json
        assert report.validate(document) == []
        assert "conformant" in {entry["verdict"] for entry in document["images"]}
        assert document["verdict"] == worst
        assert "checks" not in document  # several images: nothing is mirrored at the top level


@pytest.mark.harness(runs.NO_HTML)
def test_without_pytest_html_the_json_is_still_written(harness: HarnessRuns) -> None:
    result = harness(runs.NO_HTML)
    assert result.json["verdict"] == "conformant"
    assert result.report_dir is not None and not (result.report_dir / "conformance.html").exists()
    assert "conformance report: HTML not written: pytest-html is not installed" in result.stdout


@pytest.mark.harness(runs.NO_TERMINAL)
def test_without_the_terminal_plugin_the_json_is_still_written(harness: HarnessRuns) -> None:
    result = harness(runs.NO_TERMINAL)
    assert result.returncode == 0, result
    assert result.json["verdict"] == "conformant"
    assert {c["id"] for c in result.json["checks"]} == CHECKS_WITHOUT_DATA


XDIST = {"loadgroup": runs.XDIST_LOADGROUP, "plain": runs.XDIST_PLAIN}


@pytest.mark.parametrize(
    "dist", [pytest.param(d, marks=pytest.mark.harness(XDIST[d])) for d in sorted(XDIST)]
)
def test_several_images_under_xdist_one_container_and_one_report(harness: HarnessRuns, dist: str) -> None:
    result = harness(XDIST[dist])
    html_sample = runs.tag("broken-status-html")
    assert result.returncode == 1, result
    document = result.json
    assert report.validate(document) == []
    assert document["verdict"] == "nonconformant"
    verdicts = {entry["image"]["label"]: entry["verdict"] for entry in document["images"]}
    assert verdicts == {runs.LANGID: "conformant", html_sample: "nonconformant"}
    for entry in document["images"]:
        label = entry["image"]["label"]
        # Each image on one worker: one container, one start, every job, /shutdown checked.
        assert entry["containerImage"]["loadStatus"] == "Ready"
        assert [s["stepName"] for s in entry["loadSteps"]].count("Loading model 'langid'") == 1
        assert len(entry["runSteps"]) == RUN_JOBS_MINI, (label, entry["runSteps"])
        assert {c["id"] for c in entry["checks"]} == CHECKS_MINI
        assert all(c["outcome"] == "passed" for c in entry["checks"] if c["id"].startswith("shutdown."))
        image_id = entry["image"]["id"]
        assert len(result.created(image_id)) == 1, f"{label}: {len(result.created(image_id))} containers"
    assert len(result.containers) == 2
    # Node ids, as the terminal shows them, are "<label>::<check>" on every worker.
    assert set(result.verbose) == {f"{label}::{check}" for label in verdicts for check in CHECKS_MINI}
    assert result.report_dir is not None and (result.report_dir / "conformance.html").exists()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (tests/install-system-deps.sh installs it as root)")
    return found


def browse(page: Path, screenshot: Path) -> str:
    """The page's DOM after its scripts ran, from a real headless browser (and a screenshot)."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)  # the one of an earlier session proves nothing
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,1600",
        f"--screenshot={screenshot}",
        "--dump-dom",
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-status-html"])
def test_html_report_shows_verdict_and_timeline(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-status-html"])
    assert result.returncode == 1
    assert result.report_dir is not None
    page = result.report_dir / "conformance.html"
    screenshot = ARTIFACTS / "conformance-report.png"
    dom = browse(page, screenshot)
    assert re.search(r'<strong id="psc-verdict"[^>]*>NONCONFORMANT</strong>', dom)
    assert dom.count('<g class="psc-step">') == len(result.json["loadSteps"]) == 4
    assert "status.content-type" in dom.split('class="psc-failed"', 1)[1].split("</ol>", 1)[0]
    # pytest-html fills its results table from script: the checks are there once it ran.
    assert dom.count('class="col-testId"') >= len(CHECKS_WITHOUT_DATA)
    assert "Container log (tail)" in dom
    assert screenshot.stat().st_size > 10_000
    # Self-contained: no stylesheet or script is fetched from elsewhere.
    html = page.read_text()
    assert "<link " not in html and 'src="http' not in html


# -- checks not run, told apart from skips; the platform's words explained -------------------------


def html_rows(page: Path) -> dict[str, dict[str, Any]]:
    """pytest-html's rows, by test id, from the data its script draws the table with."""
    blob = re.search(r'data-jsonblob="([^"]*)"', page.read_text())
    assert blob is not None
    tests = json.loads(unescape(blob[1]))["tests"]
    return {test_id: row for test_id, rows in tests.items() for row in rows}


def filter_counts(page: Path) -> dict[str, str]:
    """The filter boxes above the table: result -> its text ("16 Not run,")."""
    box = re.compile(r'data-test-result="([\w-]+)"[^>]*>\s*<span class="[\w-]+">([^<]*)</span>')
    return dict(box.findall(page.read_text()))


NEVER_READY = runs.SAMPLE_RUNS["broken-never-ready"]  # every check after status.ready is not run


def never_ready_not_run(harness: HarnessRuns) -> tuple[Result, set[str], str]:
    result = harness(NEVER_READY)
    not_run = result.with_outcome("not-run")
    assert len(not_run) >= 10 and result.with_outcome("skipped") == set(), result.outcomes()
    return result, not_run, runs.tag("broken-never-ready")


@pytest.mark.harness(NEVER_READY)
def test_checks_not_run_are_counted_apart_in_the_terminal(harness: HarnessRuns) -> None:
    result, not_run, label = never_ready_not_run(harness)
    # Their own word on each -v line, their own count in the summary line.
    assert {node for node, seen in result.verbose.items() if seen == "not run"} == {
        f"{label}::{check}" for check in not_run
    }, result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    counts = f"{len(result.with_outcome('failed'))} failed, {len(result.with_outcome('passed'))} passed"
    assert f" {counts}, {len(not_run)} not run in " in summary, summary
    assert "skipped" not in summary
    assert result.returncode == 1  # as before: the failure, not the checks not run


@pytest.mark.harness(NEVER_READY)
def test_checks_not_run_are_typed_and_counted_apart_in_the_junit_xml(harness: HarnessRuns) -> None:
    result, not_run, _ = never_ready_not_run(harness)
    # Still <skipped> (JUnit has no such state), of type not-run, counted apart.
    assert result.report_dir is not None
    assert {name for name, seen in result.junit.items() if seen == "not-run"} == not_run
    suite = ET.parse(result.report_dir / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == str(len(not_run))
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["psc_not_run"] == str(len(not_run))
    messages = {s.get("message") for s in suite.iter("skipped")}
    assert messages == {"not run: the model never became ready (see status.ready)"}, messages


@pytest.mark.harness(NEVER_READY)
def test_checks_not_run_have_their_own_class_and_count_in_the_html(harness: HarnessRuns) -> None:
    result, not_run, label = never_ready_not_run(harness)
    assert result.report_dir is not None
    page = result.report_dir / "conformance.html"
    rows = html_rows(page)
    for check in not_run:
        assert 'class="col-result psc-not-run"' in rows[f"{label}::{check}"]["resultsTableRow"][0]
    assert 'psc-not-run"' not in rows[f"{label}::status.ready"]["resultsTableRow"][0]
    counts = filter_counts(page)
    assert counts["not-run"] == f"{len(not_run)} Not run,"
    assert counts["skipped"] == "0 Skipped,"


@pytest.mark.harness(NEVER_READY)
def test_checks_not_run_carry_no_evidence(harness: HarnessRuns) -> None:
    result, not_run, label = never_ready_not_run(harness)
    assert result.report_dir is not None
    rows = html_rows(result.report_dir / "conformance.html")
    # The failed check shows its /status exchange; the checks not run (which asked whether
    # the model was ready before they stopped) show none.
    assert "→" in rows[f"{label}::status.ready"]["log"]
    for check in not_run:
        assert "→" not in rows[f"{label}::{check}"]["log"], check
        assert not result.checks()[check].get("evidence")


# Unticks the "Not run" box once the page is drawn, then notes the rows still shown.
UNTICK_NOT_RUN = """<script>
window.addEventListener('load', () => {
  document.querySelector('input[data-test-result="not-run"]').click();
  setTimeout(() => document.body.setAttribute('data-shown', JSON.stringify(
    [...document.querySelectorAll('tbody.results-table-row')]
      .filter((row) => getComputedStyle(row).display !== 'none').map((row) => row.id))), 200);
});
</script>"""


@pytest.mark.harness(NEVER_READY)
def test_checks_not_run_read_not_run_in_a_browser(harness: HarnessRuns, tmp_path: Path) -> None:
    result, not_run, label = never_ready_not_run(harness)
    assert result.report_dir is not None
    page = result.report_dir / "conformance.html"
    dom = browse(page, ARTIFACTS / "conformance-report-not-run.png")
    assert dom.count('<tbody class="results-table-row not-run"') == len(not_run)
    assert len(re.findall(r'<td class="col-result[^"]*psc-not-run[^"]*">Not run</td>', dom)) == len(not_run)
    assert '<tbody class="results-table-row skipped"' not in dom
    assert '<span class="not-run">' in dom
    # Their box above the table hides them, and them alone.
    unticking = tmp_path / "conformance.html"
    unticking.write_text(page.read_text().replace("</body>", UNTICK_NOT_RUN + "</body>"))
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run(
        [*command, "--dump-dom", unticking.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    shown = re.search(r'data-shown="([^"]*)"', dom)
    assert shown is not None, dom[:2000]
    assert set(json.loads(unescape(shown[1]))) == {
        f"{label}::{check}" for check in result.outcomes() if check not in not_run
    }


@pytest.mark.harness(runs.NOT_RUN_XDIST_RS)
def test_checks_not_run_are_listed_with_their_reason_under_xdist(harness: HarnessRuns) -> None:
    result = harness(runs.NOT_RUN_XDIST_RS)
    assert result.returncode == 1, result
    not_run = result.with_outcome("not-run")
    assert {"image.port-env", "shutdown.exit-code"} <= not_run
    label = runs.tag("broken-exit-at-start")
    # -v under xdist: "[gw0] [ 42%] NOT RUN <node id>".
    assert {node for node, seen in result.verbose.items() if seen == "not run"} == {
        f"{label}::{check}" for check in not_run
    }, result.stdout
    # -rs: each listed with its reason, as pytest lists skips.
    listed = result.stdout.split("= checks not run =", 1)[1].splitlines()
    for check in not_run:
        line = next(line for line in listed if line.startswith(f"NOT RUN {label}::{check} - "))
        assert line.endswith(result.checks()[check]["message"].removeprefix("not run: ")), line
    assert "exited (code 3)" in result.stdout
    counts = f"{len(result.with_outcome('failed'))} failed, {len(result.with_outcome('passed'))} passed"
    assert f" {counts}, {len(not_run)} not run in " in result.stdout.strip().splitlines()[-1]
    assert result.junit and {n for n, seen in result.junit.items() if seen == "not-run"} == not_run
    assert result.report_dir is not None  # the controller's HTML knows them from the worker's reports
    assert filter_counts(result.report_dir / "conformance.html")["not-run"] == f"{len(not_run)} Not run,"


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-status-html"])
def test_checks_that_do_not_apply_stay_skipped(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-status-html"])  # no --model-data: the case checks skip
    skipped = result.with_outcome("skipped")
    assert {"run.example", "run.validation-error"} <= skipped, result.outcomes()
    label = runs.tag("broken-status-html")
    assert {node for node, seen in result.verbose.items() if seen == "skipped"} == {
        f"{label}::{check}" for check in skipped
    }
    assert {name for name, seen in result.junit.items() if seen == "skipped"} == skipped
    assert result.report_dir is not None
    rows = html_rows(result.report_dir / "conformance.html")
    for check in skipped:
        assert rows[f"{label}::{check}"]["resultsTableRow"][0] == '<td class="col-result">Skipped</td>'


def container_image_meanings(page: Path) -> dict[str, str]:
    """The container image table of the summary: field -> what the page says it means."""
    table = page.read_text().split("<table class='psc-container-image'>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><th>(\w+)</th><td>[^<]*</td><td class='psc-meaning'>(.*?)</td></tr>", table)
    return {name: re.sub(r"<[^>]+>", "", meaning) for name, meaning in rows}


def load_caption(page: Path) -> str:
    caption = re.search(r"<p class='psc-caption psc-load-caption'>(.*?)</p>", page.read_text())
    assert caption is not None
    return re.sub(r"<[^>]+>", "", unescape(caption[1]))


@pytest.mark.harness(runs.CONFORMANT, NEVER_READY)
def test_html_explains_the_platforms_words(harness: HarnessRuns) -> None:
    ready = harness(runs.CONFORMANT)
    assert ready.report_dir is not None
    page = ready.report_dir / "conformance.html"
    meanings = container_image_meanings(page)
    assert set(meanings) == set(ready.json["containerImage"])
    assert ready.json["containerImage"]["uploadStatus"] == "Checking status endpoint"
    assert "before the load ended Ready" in meanings["uploadStatus"]
    assert "nothing is still under way" in meanings["uploadStatus"]
    assert "answered GET /status with 200" in meanings["loadStatus"]
    assert "already in the Docker engine" in meanings["uploadPercentage"]
    assert "nothing was uploaded" in meanings["uploadPercentage"]
    assert "not a score" in meanings["loadPercentage"] and "100 only when ready" in meanings["loadPercentage"]
    caption = load_caption(page)
    assert "Uploading container image 0%" in caption and "Ready 100%" in caption
    assert "already in the Docker engine" in caption and "nothing to upload" in caption
    assert "platform shows for your image" in page.read_text()

    failed = harness(NEVER_READY)
    assert failed.report_dir is not None
    page = failed.report_dir / "conformance.html"
    meanings = container_image_meanings(page)
    assert "before the load ended Failed" in meanings["uploadStatus"]
    assert "technicalInformation says why" in meanings["loadStatus"]
    assert "keeps the percentage of the step it failed in" in meanings["loadPercentage"]
    assert "failed at 66%, during step 3 Checking status endpoint" in load_caption(page)
