"""Black-box tests of the plugin: pytest in a subprocess against the real sample images."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from harness.plugin import EXIT_NOT_EVALUATED
from harness.run import LABEL
from sample_models import build

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("sample_images", "no_harness_leftovers")]

DATA = build.HERE / "langid" / "data"
EXAMPLES = sorted(p.name for p in (DATA / "examples").iterdir())
VALIDATION_ERRORS = sorted(p.name for p in (DATA / "validation-error").iterdir())
ALL_CHECKS = {
    "image.default-command",
    "image.port-env",
    "status.ready",
    "status.content-type",
    "status.schema",
    *(f"run.example[{case}]" for case in EXAMPLES),
    *(f"run.validation-error[{case}]" for case in VALIDATION_ERRORS),
    "run.not-json-415",
    "run.wrong-type-400",
    "run.missing-input-400",
    "run.output-written",
    "shutdown.response",
    "shutdown.exit-code",
}


class Outcome:
    """What one harness run reported, check by check (read from its JUnit XML)."""

    def __init__(self, result: pytest.RunResult, junit: Path) -> None:
        self.result = result
        self.ret = result.ret
        self.by_check: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        # No JUnit file when the run stopped before collecting (pytest.exit, usage error).
        cases = ET.parse(junit).getroot().iter("testcase") if junit.exists() else iter(())
        for case in cases:
            kinds = {child.tag for child in case}
            state = (
                "failed"
                if "failure" in kinds
                else "error"
                if "error" in kinds
                else "skipped"
                if "skipped" in kinds
                else "passed"
            )
            self.by_check[case.attrib["name"]] = state
            self.seconds[case.attrib["name"]] = float(case.attrib.get("time", 0))

    def with_state(self, state: str) -> set[str]:
        return {check for check, seen in self.by_check.items() if seen == state}


@pytest.fixture
def harness(pytester: pytest.Pytester) -> Iterator[object]:
    def run(*args: str) -> Outcome:
        junit = pytester.path / "junit.xml"
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--junitxml={junit}", *args)
        return Outcome(result, junit)

    yield run


def tag(name: str) -> str:
    return build.Sample(name, "").tag


@pytest.fixture(scope="module")
def sample_images(docker_client: docker.DockerClient) -> None:
    build.build_all(docker_client)


def test_conformant_image_passes_every_check_by_tag(harness) -> None:  # type: ignore[no-untyped-def]
    outcome = harness("--model-image", build.CONFORMANT.tag, f"--model-data={DATA}")
    assert outcome.ret == 0, outcome.result.stdout.str()
    assert outcome.by_check == dict.fromkeys(ALL_CHECKS, "passed")
    outcome.result.stdout.fnmatch_lines(["*model.yaml found in the image at /opt/app/model.yaml*"])


def test_conformant_image_passes_every_check_from_a_tar(harness) -> None:  # type: ignore[no-untyped-def]
    outcome = harness("--model-tar", str(build.CONFORMANT_TAR), f"--model-data={DATA}")
    assert outcome.ret == 0, outcome.result.stdout.str()
    assert outcome.by_check == dict.fromkeys(ALL_CHECKS, "passed")


def test_an_image_loaded_from_a_tar_is_removed_afterwards(
    harness,
    docker_client: docker.DockerClient,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # An image the engine does not hold yet: the conformant one with one more label.
    image, _ = docker_client.images.build(
        path=str(build.HERE / "langid"),
        tag="psc-test/tar-load:latest",
        buildargs={"BASE_IMAGE": build.base_tag()},
        labels={"org.psc-harness.test": str(tmp_path)},
        pull=False,
        rm=True,
    )
    archive = tmp_path / "model.tar"
    with archive.open("wb") as out:
        for chunk in image.save(named=True):
            out.write(chunk)
    docker_client.images.remove(image.id, force=True)

    outcome = harness(f"--model-tar={archive}")
    assert outcome.ret == 0, outcome.result.stdout.str()
    assert outcome.with_state("failed") == set()
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image.id)


BROKEN = {
    "broken-status-html": ({"status.content-type"}, []),
    "broken-status-no-statuscode": ({"status.schema"}, []),
    "broken-ignores-port": ({"status.ready", "image.port-env"}, ["--status-timeout=4s"]),
    "broken-never-ready": ({"status.ready"}, ["--status-timeout=4s"]),
    "broken-exit-at-start": ({"status.ready"}, []),
    "broken-run-no-output": ({*(f"run.example[{case}]" for case in EXAMPLES), "run.output-written"}, []),
    "broken-run-error-not-json": (
        {
            *(f"run.validation-error[{case}]" for case in VALIDATION_ERRORS),
            "run.not-json-415",
            "run.wrong-type-400",
            "run.missing-input-400",
        },
        [],
    ),
    "broken-shutdown-exit-1": ({"shutdown.exit-code"}, []),
    "broken-shutdown-ignored": ({"shutdown.exit-code"}, ["--shutdown-timeout=3s"]),
}


def test_every_broken_sample_is_covered() -> None:
    assert set(BROKEN) == {s.name for s in build.SAMPLES if s.defect}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_image_fails_exactly_its_checks(harness, name: str) -> None:  # type: ignore[no-untyped-def]
    expected, extra = BROKEN[name]
    outcome = harness("--model-image", tag(name), f"--model-data={DATA}", *extra)
    assert outcome.ret == 1, outcome.result.stdout.str()
    assert outcome.with_state("failed") == expected
    assert outcome.with_state("error") == set()
    # Checks that cannot run once the model never became ready are skipped, never passed.
    if "status.ready" in expected:
        assert outcome.with_state("passed") <= {"image.default-command", "image.port-env"}


def test_failure_message_names_route_expectation_spec_and_log(harness) -> None:  # type: ignore[no-untyped-def]
    outcome = harness("--model-image", tag("broken-shutdown-exit-1"))
    outcome.result.stdout.fnmatch_lines(
        [
            "*[[]shutdown.exit-code[]] POST /shutdown: expected exit code 0",
            "*actual   exit code 1",
            "*see SPEC.md section 2*",
            "*container log (tail):*",
            "*Handling signal: term*",
        ]
    )


def test_exit_at_start_fails_at_once_not_at_the_timeout(harness) -> None:  # type: ignore[no-untyped-def]
    outcome = harness("--model-image", tag("broken-exit-at-start"), "--status-timeout=60s")
    assert outcome.with_state("failed") == {"status.ready"}
    assert outcome.seconds["status.ready"] < 20
    outcome.result.stdout.fnmatch_lines(["*the container exited with code 3*", "*refusing to start*"])


def test_slow_start_passes_under_20s(harness) -> None:  # type: ignore[no-untyped-def]
    outcome = harness(
        "--model-image", tag("langid-slow-start"), "--status-timeout=20s", f"--model-data={DATA}"
    )
    assert outcome.ret == 0, outcome.result.stdout.str()
    assert outcome.with_state("failed") == set()


def test_slow_start_fails_under_3s(harness) -> None:  # type: ignore[no-untyped-def]
    outcome = harness("--model-image", tag("langid-slow-start"), "--status-timeout=3s")
    assert outcome.ret == 1
    assert outcome.with_state("failed") == {"status.ready"}
    outcome.result.stdout.fnmatch_lines(["*/status not 200 within 3 s (* polls; last: 503*"])


def test_several_images_get_one_battery_each(harness) -> None:  # type: ignore[no-untyped-def]
    outcome = harness("--model-image", build.CONFORMANT.tag, "--model-image", tag("broken-status-html"))
    assert outcome.ret == 1
    outcome.result.stdout.fnmatch_lines(
        ["FAILED psc-samples/broken-status-html:latest::status.content-type*"]
    )
    lines = outcome.result.stdout.lines
    assert not any(line.startswith(f"FAILED {build.CONFORMANT.tag}") for line in lines)


def test_authors_own_checks_use_the_public_fixtures(harness, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(
        test_author="""
        import json

        def test_french_is_french(model_job):
            result = model_job({"input.txt": "Bonjour, je voudrais un café et un croissant.".encode()})
            assert result.exchange.status == 200
            assert json.loads(result.output("results.json").read_text())["language"] == "fr"

        def test_metadata_is_known(model_server):
            assert model_server.metadata.inputs == ("input.txt",)
        """
    )
    outcome = harness("--model-image", build.CONFORMANT.tag)
    assert outcome.ret == 0, outcome.result.stdout.str()
    assert outcome.by_check["test_french_is_french"] == "passed"
    assert outcome.by_check["test_metadata_is_known"] == "passed"
    assert outcome.by_check["shutdown.exit-code"] == "passed"


# -- cannot evaluate: one line, its own exit code ------------------------------------------


def test_unknown_image_is_not_evaluated(harness) -> None:  # type: ignore[no-untyped-def]
    outcome = harness("--model-image", "psc-test/does-not-exist:1")
    assert outcome.ret == EXIT_NOT_EVALUATED
    outcome.result.stdout.fnmatch_lines(
        ["harness: image psc-test/does-not-exist:1 is not in the Docker engine*"]
    )
    assert "Traceback" not in outcome.result.stdout.str()
    assert outcome.with_state("error") == {"image.default-command"}
    assert outcome.with_state("failed") == set()


def test_unreachable_engine_is_not_evaluated(harness, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    outcome = harness("--model-image", build.CONFORMANT.tag)
    assert outcome.ret == EXIT_NOT_EVALUATED
    outcome.result.stdout.fnmatch_lines(["harness: cannot reach the Docker engine*"])


def test_invalid_model_yaml_is_not_evaluated(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "model.yaml"
    bad.write_text((build.HERE / "langid" / "model.yaml").read_text().replace("status: 20s", "status: ''"))
    outcome = harness("--model-image", build.CONFORMANT.tag, f"--model-yaml={bad}")
    assert outcome.ret == EXIT_NOT_EVALUATED
    outcome.result.stdout.fnmatch_lines([f"harness: {bad}: timeout.status: *"])


def test_not_an_image_archive_is_not_evaluated(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "model.tar"
    bogus.write_bytes(b"definitely not a tar archive" * 100)
    outcome = harness(f"--model-tar={bogus}")
    assert outcome.ret == EXIT_NOT_EVALUATED
    assert outcome.with_state("error") == {"image.default-command"}
    outcome.result.stdout.fnmatch_lines([f"harness: {bogus} is not a readable docker image archive*"])


def test_a_bad_target_does_not_stop_the_others(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outcome = harness(f"--model-tar={tmp_path / 'missing.tar'}", "--model-image", build.CONFORMANT.tag)
    assert outcome.ret == EXIT_NOT_EVALUATED
    outcome.result.stdout.fnmatch_lines(
        [f"harness: the image archive {tmp_path / 'missing.tar'} does not exist"]
    )
    counts = outcome.result.parseoutcomes()
    assert (counts["passed"], counts["errors"]) == (10, 1)  # the conformant image's battery ran whole


@pytest.mark.parametrize("problem", ["empty-data-dir", "no-message-file", "case-without-input"])
def test_bad_test_case_data_is_not_evaluated(harness, tmp_path: Path, problem: str) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    data.mkdir()
    if problem == "no-message-file":
        (data / "validation-error" / "empty").mkdir(parents=True)
        (data / "validation-error" / "empty" / "input.txt").write_text("")
    elif problem == "case-without-input":
        (data / "examples" / "lost").mkdir(parents=True)
        (data / "examples" / "lost" / "results.json").write_text("{}")
    outcome = harness("--model-image", build.CONFORMANT.tag, f"--model-data={data}")
    assert outcome.ret == EXIT_NOT_EVALUATED, outcome.result.stdout.str()
    assert len(outcome.with_state("error")) == 1
    assert outcome.with_state("failed") == set()
    assert "Traceback" not in outcome.result.stdout.str()


def test_checks_reordered_after_shutdown_still_hold(harness, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    # Another plugin (pytest --ff, pytest-randomly...) may run /shutdown first.
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(items):
            items.reverse()
        """
    )
    outcome = harness("--model-image", build.CONFORMANT.tag, f"--model-data={DATA}")
    assert outcome.ret == 0, outcome.result.stdout.str()
    assert outcome.by_check == dict.fromkeys(ALL_CHECKS, "passed")


def test_bad_option_value_is_a_usage_error_naming_its_source(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--model-image", "x", "--run-timeout", "soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --run-timeout: expected a duration such as 20s or 5m, got 'soon'"])
    pytester.makeini("[pytest]\nmodel_image = x\nmodel_status_timeout = 5 minutes\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini key model_status_timeout in *tox.ini: expected a duration*"])


def test_no_container_outlives_a_run(harness, docker_client: docker.DockerClient) -> None:  # type: ignore[no-untyped-def]
    harness("--model-image", tag("broken-never-ready"), "--status-timeout=2s")
    assert docker_client.containers.list(all=True, filters={"label": LABEL}) == []
