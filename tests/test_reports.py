"""The JSON and HTML conformance reports, from real harness runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from harness import report
from sample_models import build

DATA = build.HERE / "langid" / "data"
SECRET = "s3cret-Registry-Passw0rd"
ARTIFACTS = build.ROOT / "reports" / "test-artifacts"


@pytest.fixture(scope="module")
def sample_images(docker_client: docker.DockerClient) -> None:
    build.build_all(docker_client)


@pytest.fixture(autouse=True)
def registry_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSC_REGISTRY_PASSWORD", SECRET)


def run_harness(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any], Path]:
    """Run the harness (with a registry password in its environment that must never leak)."""
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--conformance-report=out", "--junitxml=out/junit.xml", *args
    )
    out = pytester.path / "out"
    document = json.loads((out / "conformance.json").read_text())
    return result, document, out


def assert_steps_in_order(document: dict[str, Any]) -> None:
    steps = document["loadSteps"]
    assert [s["step"] for s in steps] == sorted(s["step"] for s in steps)
    starts = [datetime.fromisoformat(s["startedAt"]) for s in steps]
    assert starts == sorted(starts)
    percentages = [s["percentage"] for s in steps]
    assert percentages == sorted(percentages)


def assert_no_secret(result: pytest.RunResult, out: Path) -> None:
    assert SECRET not in result.stdout.str() + result.stderr.str()
    for path in out.iterdir():
        assert SECRET not in path.read_text(errors="replace"), path


@pytest.mark.docker
@pytest.mark.usefixtures("sample_images", "no_harness_leftovers")
class TestJsonReport:
    def test_conformant(self, pytester: pytest.Pytester) -> None:
        result, document, out = run_harness(
            pytester, "--model-image", build.CONFORMANT.tag, f"--model-data={DATA}"
        )
        assert result.ret == 0
        assert report.validate(document) == []
        assert document["verdict"] == "conformant"
        image = document["containerImage"]
        assert (image["loadStatus"], image["loadPercentage"], image["uploadPercentage"]) == (
            "Ready",
            100,
            100,
        )
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
        assert len(document["checks"]) == 19
        english = next(job for job in document["runSteps"] if job["job"] == "english")
        assert [s["stepName"] for s in english["steps"]] == list(
            ("Loading model", "Fetching inputs", "Submitting inputs", "Recording outputs", "Completed")
        )
        assert document["image"]["modelYaml"].endswith(":/opt/app/model.yaml")
        assert document["image"]["engineVersion"]
        assert_no_secret(result, out)

    def test_broken(self, pytester: pytest.Pytester) -> None:
        result, document, out = run_harness(
            pytester, "--model-image", "psc-samples/broken-status-no-statuscode:latest"
        )
        assert result.ret == 1
        assert report.validate(document) == []
        assert document["verdict"] == "nonconformant"
        failed = {c["id"]: c for c in document["checks"] if c["outcome"] == "failed"}
        assert set(failed) == {"status.schema"}
        assert "'statusCode' is a required property" in failed["status.schema"]["message"]
        assert document["containerImage"]["loadStatus"] == "Ready"
        assert_steps_in_order(document)
        assert_no_secret(result, out)

    def test_never_ready(self, pytester: pytest.Pytester) -> None:
        result, document, out = run_harness(
            pytester, "--model-image", "psc-samples/broken-never-ready:latest", "--status-timeout=2s"
        )
        assert result.ret == 1
        assert report.validate(document) == []
        assert document["verdict"] == "nonconformant"
        image = document["containerImage"]
        assert image["loadStatus"] == "Failed" and image["loadPercentage"] < 100
        assert "503" in image["technicalInformation"]
        assert max(s["percentage"] for s in document["loadSteps"]) < 100
        assert_steps_in_order(document)
        failed = next(c for c in document["checks"] if c["id"] == "status.ready")
        assert failed["outcome"] == "failed" and failed["specSection"] == "sections 1, 2"
        assert_no_secret(result, out)

    def test_not_evaluated(self, pytester: pytest.Pytester) -> None:
        result, document, _ = run_harness(pytester, "--model-image", "psc-test/not-there:1")
        assert result.ret == 6
        assert report.validate(document) == []
        assert document["verdict"] == "error"
        assert "not in the Docker engine" in document["containerImage"]["technicalInformation"]

    def test_without_pytest_html_the_json_is_still_written(self, pytester: pytest.Pytester) -> None:
        result, document, out = run_harness(pytester, "-p", "no:html", "--model-image", build.CONFORMANT.tag)
        assert document["verdict"] == "conformant"
        assert not (out / "conformance.html").exists()
        result.stdout.fnmatch_lines(["conformance report: HTML not written: pytest-html is not installed"])

    def test_several_images_under_xdist_one_report(self, pytester: pytest.Pytester) -> None:
        result, document, out = run_harness(
            pytester,
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "--model-image",
            build.CONFORMANT.tag,
            "--model-image",
            "psc-samples/broken-status-html:latest",
        )
        assert result.ret == 1
        assert report.validate(document) == []
        assert document["verdict"] == "nonconformant"
        verdicts = {entry["image"]["label"]: entry["verdict"] for entry in document["images"]}
        assert verdicts == {
            build.CONFORMANT.tag: "conformant",
            "psc-samples/broken-status-html:latest": "nonconformant",
        }
        for entry in document["images"]:
            assert entry["containerImage"]["loadStatus"] == "Ready"
        assert (out / "conformance.html").exists()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (tests/install-system-deps.sh installs it as root)")
    return found


def browse(page: Path, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran, from a real headless browser."""
    base = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,1600",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [*base, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120, check=True
        )
    return dom.stdout


@pytest.mark.docker
@pytest.mark.usefixtures("sample_images", "no_harness_leftovers")
def test_html_report_shows_verdict_and_timeline(pytester: pytest.Pytester) -> None:
    result, document, out = run_harness(
        pytester, "--model-image", "psc-samples/broken-status-html:latest", f"--model-data={DATA}"
    )
    assert result.ret == 1
    page = out / "conformance.html"
    dom = browse(page, ARTIFACTS / "conformance-report.png")
    assert '<strong id="psc-verdict">NONCONFORMANT</strong>' in dom
    assert dom.count('<g class="psc-step">') == len(document["loadSteps"]) == 4
    assert "status.content-type" in dom.split('class="psc-failed"', 1)[1].split("</ol>", 1)[0]
    # pytest-html fills its results table from script: the checks are there once it ran.
    assert dom.count('class="col-testId"') >= 19
    assert "Container log (tail)" in dom
    assert (ARTIFACTS / "conformance-report.png").stat().st_size > 10_000
    # Self-contained: no stylesheet or script is fetched from elsewhere.
    html = page.read_text()
    assert "<link " not in html and 'src="http' not in html
    assert_no_secret(result, out)


def test_verdict_is_the_worst_over_images() -> None:
    snapshot = {"containerImage": {}, "loadSteps": [], "runSteps": [], "image": {}}
    checks = [
        {
            "image": "a",
            "id": "x",
            "outcome": "passed",
            "message": "",
            "specSection": "2",
            "durationSeconds": 0,
        },
        {
            "image": "b",
            "id": "x",
            "outcome": "failed",
            "message": "",
            "specSection": "2",
            "durationSeconds": 0,
        },
    ]
    built = report.build({"a": dict(snapshot, image={}), "b": dict(snapshot, image={})}, checks)
    assert [entry["verdict"] for entry in built["images"]] == ["conformant", "nonconformant"]
    assert built["verdict"] == "nonconformant"
    assert "checks" not in built  # several images: nothing is mirrored at the top level
    checks.append(
        {"image": "a", "id": "y", "outcome": "error", "message": "", "specSection": "2", "durationSeconds": 0}
    )
    assert (
        report.build({"a": dict(snapshot, image={}), "b": dict(snapshot, image={})}, checks)["verdict"]
        == "error"
    )
