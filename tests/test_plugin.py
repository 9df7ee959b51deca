"""Black-box tests of the plugin: pytest in a subprocess against the real sample images.

The runs are in ``tests/runs.py``; each is made once and read here by several tests.
"""

from __future__ import annotations

import fnmatch
import json
import re

import pytest

from harness import checks
from sample_models import build
from tests import runs
from tests.expect import (
    ALL_CHECKS,
    CHECKS_MINI,
    CHECKS_WITHOUT_DATA,
    NEEDS_THE_MODEL,
    NOT_RUN,
    RUN_EXAMPLES,
    RUN_VALIDATION_ERRORS,
    failure_block,
    no_traceback,
)
from tests.harness_api import EXIT_INTERRUPTED, EXIT_NOT_EVALUATED, EXIT_USAGE
from tests.harness_runs import HarnessRuns, Result

pytestmark = pytest.mark.docker


# -- the conformant sample -------------------------------------------------------------------


@pytest.mark.harness(runs.CONFORMANT)
def test_conformant_image_passes_every_check_by_tag(harness: HarnessRuns) -> None:
    result = harness(runs.CONFORMANT)
    assert result.returncode == 0, result
    assert result.outcomes() == dict.fromkeys(ALL_CHECKS, "passed")
    # Each check really ran in this pytest session: a test item per check, each one passed.
    assert result.verbose == {f"{runs.LANGID}::{check}": "passed" for check in ALL_CHECKS}
    assert "model.yaml found in the image at /opt/app/model.yaml" in result.stdout
    # /shutdown and its exit code come last.
    assert [c["id"] for c in result.json["checks"]][-2:] == ["shutdown.response", "shutdown.exit-code"]


@pytest.mark.harness(runs.DESELECTED)
def test_a_run_with_checks_deselected_is_incomplete_by_its_exit_code_too(harness: HarnessRuns) -> None:
    result = harness(runs.DESELECTED)
    assert result.json["verdict"] == "incomplete"
    assert result.returncode == EXIT_INTERRUPTED, result
    assert result.with_outcome("passed") == {"status.ready", "status.content-type", "status.schema"}
    assert "image.model-yaml" in result.with_outcome("not-run")


@pytest.mark.harness(runs.TAR_SPACED)
def test_conformant_image_passes_every_check_from_a_tar(harness: HarnessRuns) -> None:
    result = harness(runs.TAR_SPACED)
    assert result.returncode == 0, result
    assert result.outcomes() == dict.fromkeys(ALL_CHECKS, "passed")
    assert result.json["image"]["source"] == "tar"
    assert result.json["loadSteps"][0]["details"]["source"] == "tar"


@pytest.mark.harness(runs.TAR_SPACED)
def test_an_image_already_in_the_engine_survives_a_run_of_its_tar(harness: HarnessRuns) -> None:
    result = harness(runs.TAR_SPACED)
    assert result.facts["present_before"], "the sample image was not in the engine: this proves nothing"
    assert result.facts["present_after"], "the run of its TAR removed an image it did not bring"


@pytest.mark.harness(runs.TAR_SPACED)
def test_node_ids_are_label_and_check_however_paths_are_given(harness: HarnessRuns) -> None:
    # --model-tar x.tar and --model-data ../data, with a space, from a subdirectory: pytest
    # reads such values as rootdir hints. The ids must still be "<label>::<check>".
    result = harness(runs.TAR_SPACED)
    assert set(result.verbose) == {f"x.tar::{check}" for check in ALL_CHECKS}, result.stdout
    assert {entry["image"]["label"] for entry in result.json["images"]} == {"x.tar"}
    assert set(result.junit) == ALL_CHECKS


@pytest.mark.harness(runs.FRESH_TAR)
def test_an_image_loaded_from_a_tar_is_removed_afterwards(harness: HarnessRuns) -> None:
    result = harness(runs.FRESH_TAR)
    assert result.returncode == 0, result
    assert result.json["image"]["source"] == "tar"
    assert result.with_outcome("failed", "error") == set()
    assert not result.facts["present_after"], "the image loaded from the TAR is still in the engine"


@pytest.mark.harness(runs.FRESH_TAR_KEPT)
def test_keep_image_keeps_what_was_loaded(harness: HarnessRuns) -> None:
    result = harness(runs.FRESH_TAR_KEPT)
    assert result.json["image"]["source"] == "tar"
    assert result.facts["present_after"], "--keep-image did not keep the image loaded from the TAR"


@pytest.mark.harness(runs.TWO_IMAGES)
def test_several_images_get_one_battery_each(harness: HarnessRuns) -> None:
    result = harness(runs.TWO_IMAGES)
    html_sample = runs.tag("broken-status-html")
    assert result.returncode == 1
    assert f"FAILED {html_sample}::status.content-type" in result.stdout
    assert not any(line.startswith(f"FAILED {runs.LANGID}") for line in result.stdout.splitlines())
    verdicts = {entry["image"]["label"]: entry["verdict"] for entry in result.json["images"]}
    assert verdicts == {runs.LANGID: "conformant", html_sample: "nonconformant"}
    assert result.json["verdict"] == "nonconformant"
    # One container for each battery.
    assert len(result.containers) == 2


@pytest.mark.harness(runs.AUTHOR)
def test_authors_own_checks_use_the_public_fixtures(harness: HarnessRuns) -> None:
    result = harness(runs.AUTHOR)
    assert result.returncode == 0, result
    assert result.junit["test_french_is_french"] == "passed"
    assert result.junit["test_metadata_is_known"] == "passed"
    assert result.junit["test_the_server_facade"] == "passed"
    assert result.outcomes()["shutdown.exit-code"] == "passed"
    # Run on the same container as the battery, before its /shutdown.
    assert len(result.containers) == 1


@pytest.mark.harness(runs.REVERSED)
def test_checks_reordered_after_shutdown_still_hold(harness: HarnessRuns) -> None:
    result = harness(runs.REVERSED)
    assert result.returncode == 0, result
    assert result.outcomes() == dict.fromkeys(CHECKS_MINI, "passed")


# -- each sample fails exactly the checks of its defect -------------------------------------------

EXPECTED_FAILURES: dict[str, set[str]] = {
    "broken-status-html": {"status.content-type"},
    "broken-status-no-statuscode": {"status.schema"},
    "broken-ignores-port": {"status.ready", "image.port-env"},
    "broken-never-ready": {"status.ready"},
    "broken-exit-at-start": {"status.ready"},
    "broken-run-no-output": {*RUN_EXAMPLES, "run.output-written"},
    "broken-run-error-not-json": {
        *RUN_VALIDATION_ERRORS,
        "run.not-json-415",
        "run.wrong-type-400",
        "run.missing-input-400",
    },
    "broken-shutdown-exit-1": {"shutdown.exit-code"},
    "broken-shutdown-ignored": {"shutdown.exit-code"},
    "broken-no-command": {"image.default-command"},
    "hostile-huge-body": {"status.schema"},
    "hostile-trickle": {"status.ready"},
    "hostile-output-symlink": {*RUN_EXAMPLES, "run.output-written"},
    "hostile-output-fifo": {*RUN_EXAMPLES, "run.output-written"},
    "hostile-crash-during-run": {"run.example[english]"},
    "broken-memory-hog": {*RUN_EXAMPLES, *RUN_VALIDATION_ERRORS, "run.output-written"},
    "broken-output-media-type": {*RUN_EXAMPLES, "run.output-written"},
    "langid-close-to-timeout": set(),
    "langid-run-allocates": set(),
    "langid-gzip": set(),
    "langid-non-root": set(),
    "hostile-litters-jobs": set(),
    "broken-ignores-output-dir": {*RUN_EXAMPLES, "run.output-written"},
    "langid-hard-link-output": set(),
    "hostile-huge-undeclared-output": set(),
    "broken-status-phrase": {"status.schema"},
    "broken-status-code-float": {"status.schema"},
    "broken-two-content-types": {"status.content-type"},
    "broken-404-html": {"route.unknown-404"},
    "broken-405-html": {"route.wrong-method-405"},
}
# Tested on their own below: what fails there depends on more than the sample.
TESTED_APART = {"hostile-huge-output", "hostile-billion-laughs", "hostile-deep-json", "hostile-slow-headers"}
TESTED_APART.add("broken-missing-dependency")  # its log tail holds a traceback (tests/test_rehearsal.py)


def battery_of(name: str) -> set[str]:
    """The checks of a sample's run: with the test cases, one of each kind, or none."""
    if name in runs.SAMPLES_WITHOUT_DATA:
        return CHECKS_WITHOUT_DATA
    return CHECKS_MINI if name in runs.SAMPLES_WITH_ONE_CASE else ALL_CHECKS


def test_every_sample_is_checked() -> None:
    built = {s.name for s in build.HTTP_SAMPLES if not s.on_demand}  # gRPC ones: tests/test_grpc.py
    checked = {
        *EXPECTED_FAILURES,
        *TESTED_APART,
        "langid",
        "langid-slow-start",
        "langid-big-output",  # tests/test_compare.py
        "hostile-log-flood",
        "hostile-dies-after-first-answer",
    }
    assert built == checked
    assert set(runs.SAMPLE_RUNS) == set(EXPECTED_FAILURES) | TESTED_APART


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.harness(runs.SAMPLE_RUNS[n])) for n in sorted(EXPECTED_FAILURES)],
)
def test_sample_fails_exactly_its_checks(harness: HarnessRuns, name: str) -> None:
    result = harness(runs.SAMPLE_RUNS[name])
    expected = EXPECTED_FAILURES[name] & battery_of(name)
    assert result.returncode == (1 if expected else 0), result
    assert result.json["verdict"] == ("nonconformant" if expected else "conformant")
    assert result.with_outcome("failed") == expected, result
    assert result.with_outcome("error") == set(), result
    assert set(result.outcomes()) == battery_of(name)
    no_traceback(result)
    if not expected:
        assert result.with_outcome("failed", "error", "not-run") == set()
        if name not in runs.SAMPLES_WITHOUT_DATA:
            assert result.with_outcome("passed") == battery_of(name)
    if "status.ready" in expected:
        # Checks that cannot run once the model never became ready say so; none passes.
        assert result.with_outcome("passed") <= {
            "image.model-yaml",
            "image.default-command",
            "image.port-env",
        }
        assert all(
            c["message"].startswith("not run:") for c in result.json["checks"] if c["outcome"] == "not-run"
        )


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-shutdown-exit-1"])
def test_failure_message_names_route_expectation_spec_and_log(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-shutdown-exit-1"])
    block = failure_block(result.stdout, "[shutdown.exit-code] POST /shutdown")
    assert "expected exit code 0" in block
    assert "actual   exit code 1" in block
    assert "rule: docs/contract.md#shutdown" in block
    assert "container log (tail):" in block
    assert "Shutting down" in block  # the model's log lines of that check's time span


ENVELOPE_FINDINGS = {
    "broken-status-phrase": (
        "status.schema",
        "GET /status: expected status 'OK' (the reason phrase of 200)",
        "actual   status 'Ready'",
        "envelope",
    ),
    "broken-status-code-float": (
        "status.schema",
        "GET /status: expected statusCode a JSON integer such as 200",
        "actual   statusCode 200.0, a number with a fraction or exponent",
        "envelope",
    ),
    "broken-two-content-types": (
        "status.content-type",
        "GET /status: expected one Content-Type header, application/json",
        "actual   2 Content-Type headers ('text/html; charset=utf-8', 'application/json')",
        "json",
    ),
    "broken-404-html": (
        "route.unknown-404",
        ": expected Content-Type application/json",  # GET /psc-harness-<random>
        "actual   404 text/html",
        "json",
    ),
    "broken-405-html": (
        "route.wrong-method-405",
        "GET /run: expected Content-Type application/json",
        "actual   405 text/html",
        "json",
    ),
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.harness(runs.SAMPLE_RUNS[n])) for n in sorted(ENVELOPE_FINDINGS)],
)
def test_envelope_failures_say_what_is_wrong(harness: HarnessRuns, name: str) -> None:
    check, expected, actual, rule = ENVELOPE_FINDINGS[name]
    result = harness(runs.SAMPLE_RUNS[name])
    block = failure_block(result.stdout, f"[{check}] ")
    assert expected in block and actual in block, block
    assert f"rule: docs/contract.md#{rule}" in block, block
    rules = {check_id: rule for check_id, rule, _summary in checks.describe_all()}
    assert result.checks()[check]["rule"] == f"docs/contract.md#{rules[check]}"


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-exit-at-start"])
def test_exit_at_start_fails_at_once_not_at_the_timeout(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-exit-at-start"])  # --status-timeout=60s
    ready = result.checks()["status.ready"]
    assert ready["durationSeconds"] < 20
    assert result.seconds < 40
    assert "the container exited with code 3" in ready["message"]
    assert "refusing to start" in result.stdout  # the log tail


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-shutdown-ignored"])
def test_a_shutdown_that_does_not_end_the_process_is_killed_at_the_timeout(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-shutdown-ignored"])  # --shutdown-timeout=1s
    check = result.checks()["shutdown.exit-code"]
    assert "killed" in check["message"]
    shutdown = result.checks()["shutdown.response"]["durationSeconds"] + check["durationSeconds"]
    assert 1 <= shutdown < 10, shutdown


@pytest.mark.harness(runs.BESIDE_A_LIVE_RUN)
def test_slow_start_passes_under_20s(harness: HarnessRuns) -> None:
    result = harness(runs.BESIDE_A_LIVE_RUN)["slow"]
    assert result.returncode == 0, result
    assert result.outcomes() == dict.fromkeys(ALL_CHECKS, "passed")
    checking = result.json["loadSteps"][2]["details"]
    # /status is polled every 10 ms to 50 ms (each poll also takes its request's time): over
    # its 8 s start, far more polls than one every 250 ms would make.
    assert checking["readySeconds"] > 6
    assert checking["polls"] >= checking["readySeconds"] / 0.25, checking


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-memory-hog"], runs.SAMPLE_RUNS["broken-output-media-type"])
def test_memory_and_media_type_failures_say_what_happened(harness: HarnessRuns) -> None:
    hog = harness(runs.SAMPLE_RUNS["broken-memory-hog"]).checks()["run.example[english]"]["message"]
    assert "ran out of its declared memory (256 MiB" in hog, hog
    media = harness(runs.SAMPLE_RUNS["broken-output-media-type"]).checks()["run.example[english]"]["message"]
    assert "results.json of its declared mediaType application/json" in media, media


@pytest.mark.harness(runs.SAMPLE_RUNS["langid-close-to-timeout"])
def test_ready_close_to_the_status_timeout_is_a_warning_not_a_failure(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["langid-close-to-timeout"])  # ready after about 11 s of 40 s
    assert result.returncode == 0, result
    (warning,) = result.json["warnings"]
    assert warning.startswith("ready after") and "of the 40 s status timeout" in warning, warning
    assert "less than the 90% margin" in warning, warning
    assert f"warning: {warning}" in result.stdout


@pytest.mark.harness(runs.SLOW_START_SHORT)
def test_slow_start_fails_under_a_short_status_timeout(harness: HarnessRuns) -> None:
    result = harness(runs.SLOW_START_SHORT)
    assert result.returncode == 1
    assert result.with_outcome("failed") == {"status.ready"}
    message = result.checks()["status.ready"]["message"]
    # The last poll is 503, or it was cut by the deadline on a loaded machine.
    assert re.search(
        r"/status not 200 within 7 s \(\d+ polls; last: (503|no whole answer \(timed out)", message
    ), message
    assert result.seconds < 30


# -- wrong statuses and expectations (test-only images and data) ----------------------------------


@pytest.mark.harness(runs.WRONG_CODES)
def test_wrong_statuses_outputs_and_messages_fail_their_checks(harness: HarnessRuns) -> None:
    result = harness(runs.WRONG_CODES)
    failed = {
        "run.example[english]",  # one value differs from the expected results.json
        "run.validation-error[empty]",  # the expected message is not the model's
        "run.not-json-415",  # 400 JSON instead of 415
        "run.wrong-type-400",  # 422 instead of 400
        "run.missing-input-400",  # 404 instead of 400
        "shutdown.response",  # 200 instead of 202
    }
    assert result.returncode == 1, result
    assert result.with_outcome("failed") == failed, result
    assert result.with_outcome("passed") == ALL_CHECKS - failed
    checks = result.checks()
    # JSON outputs are compared as values: the message names where they differ, and the
    # french case, whose expected file differs only in its layout, passes.
    assert "results.json" in checks["run.example[english]"]["message"]
    assert '$.language: expected "xx", got "en"' in checks["run.example[english]"]["message"]
    assert runs.WRONG_MESSAGE in checks["run.validation-error[empty]"]["message"]
    for check_id, expected, actual in (
        ("run.not-json-415", "415", "400"),
        ("run.wrong-type-400", "400", "422"),
        ("run.missing-input-400", "400", "404"),
    ):
        message = checks[check_id]["message"]
        assert "POST /run" in message and expected in message and actual in message, message
    message = checks["shutdown.response"]["message"]
    assert "POST /shutdown" in message and "202" in message and "200" in message, message


@pytest.mark.harness(runs.SAMPLE_RUNS["broken-no-command"])
def test_image_without_a_command_is_nonconformant_and_the_rest_not_run(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-no-command"])
    assert result.returncode == 1, result
    assert result.json["verdict"] == "nonconformant"
    checks = result.checks()
    assert checks["image.default-command"]["outcome"] == "failed"
    for check_id in NEEDS_THE_MODEL:
        assert checks[check_id]["outcome"] in NOT_RUN, checks[check_id]
        assert checks[check_id]["message"].startswith("not run:"), checks[check_id]


# -- cannot evaluate: one line, its own exit code ---------------------------------------------------


def assert_one_error(result: Result, first: bool = True) -> None:
    """Not evaluated: one check carries the error (``first``: the first check, and no other
    check could run), none failed."""
    checks = result.json["checks"]
    assert [c["outcome"] for c in checks].count("error") == 1, checks
    assert result.with_outcome("failed") == set()
    if first:
        assert checks[0]["outcome"] == "error", checks[0]
        assert result.with_outcome("passed") == set()


def one_harness_line(result: Result, pattern: str) -> str:
    lines = result.harness_lines()
    assert len(lines) == 1, result
    assert fnmatch.fnmatch(lines[0], pattern), lines[0]
    no_traceback(result)
    return lines[0]


@pytest.mark.harness(runs.UNKNOWN_IMAGE)
def test_unknown_image_is_not_evaluated(harness: HarnessRuns) -> None:
    result = harness(runs.UNKNOWN_IMAGE)
    assert result.returncode == EXIT_NOT_EVALUATED
    one_harness_line(result, "harness: image psc-test/does-not-exist:1 is not in the Docker engine*")
    assert_one_error(result)
    assert result.containers == []  # nothing was started for it


@pytest.mark.harness(runs.NO_ENGINE)
def test_unreachable_engine_is_not_evaluated(harness: HarnessRuns) -> None:
    result = harness(runs.NO_ENGINE)
    assert result.returncode == EXIT_NOT_EVALUATED
    one_harness_line(result, "harness: cannot reach the Docker engine*")


@pytest.mark.harness(runs.INVALID_YAML)
def test_invalid_model_yaml_is_not_evaluated(harness: HarnessRuns) -> None:
    result = harness(runs.INVALID_YAML)
    assert result.returncode == EXIT_NOT_EVALUATED
    one_harness_line(result, f"harness: {result.cwd / 'model.yaml'}*timeout.status: *")
    assert_one_error(result, first=False)
    assert result.outcomes()["image.model-yaml"] == "error"


@pytest.mark.harness(runs.BAD_ARCHIVES["not-an-archive"])
def test_not_an_image_archive_is_not_evaluated(harness: HarnessRuns) -> None:
    result = harness(runs.BAD_ARCHIVES["not-an-archive"])
    assert result.returncode == EXIT_NOT_EVALUATED
    assert_one_error(result)
    one_harness_line(result, f"harness: {result.cwd / 'model.tar'} is not a*docker image archive*")


@pytest.mark.harness(runs.MISSING_TAR_BESIDE_GOOD)
def test_a_bad_target_does_not_stop_the_others(harness: HarnessRuns) -> None:
    result = harness(runs.MISSING_TAR_BESIDE_GOOD)
    assert result.returncode == EXIT_NOT_EVALUATED
    missing = result.dir / "missing.tar"
    assert f"harness: the image archive {missing} does not exist" in result.harness_lines()
    # The conformant image's battery ran whole (without test cases, three of them skip).
    entry = result.image_entry(runs.LANGID)
    assert entry["verdict"] == "conformant"
    passed = {c["id"] for c in entry["checks"] if c["outcome"] == "passed"}
    assert passed == CHECKS_WITHOUT_DATA - {"run.example", "run.validation-error", "run.output-written"}
    assert result.image_entry("missing.tar")["verdict"] == "error"
    assert result.json["verdict"] == "error"


BAD_DATA_LINES = {
    "empty-data-dir": "harness: *data holds no test case*",
    "no-message-file": "harness: *validation-error/empty*message*",
    "case-without-input": "harness: *case examples/lost has no input file input.txt*",
    "same-case-twice": "harness: *examples/english/ and example/english/ are both the case 'english'*",
    "empty-message": "harness: *case validation-error/empty: message.txt is empty*",
    "fifo-input": "harness: *case examples/english: input.txt is a FIFO, not a regular file*",
    "bad-tolerance-file": "harness: */examples/english/tolerance.json: rel must be a number >= 0*",
}


@pytest.mark.parametrize(
    "problem", [pytest.param(p, marks=pytest.mark.harness(runs.BAD_DATA[p])) for p in sorted(runs.BAD_DATA)]
)
def test_bad_test_case_data_is_not_evaluated(harness: HarnessRuns, problem: str) -> None:
    result = harness(runs.BAD_DATA[problem])
    assert result.returncode == EXIT_NOT_EVALUATED, result
    assert len(result.with_outcome("error")) == 1
    assert result.with_outcome("failed") == set()
    one_harness_line(result, BAD_DATA_LINES[problem])


@pytest.mark.harness(runs.LONG_CASE)
def test_a_case_directory_with_a_long_name_is_no_traceback(harness: HarnessRuns) -> None:
    result = harness(runs.LONG_CASE)
    no_traceback(result)
    if result.returncode == EXIT_NOT_EVALUATED:
        one_harness_line(result, "harness: *")
    else:
        assert result.returncode == 0, result
        assert result.outcomes()[f"run.example[{runs.LONG_CASE_NAME}]"] == "passed"


# -- usage errors: one line, exit code 4 --------------------------------------------------------------


@pytest.mark.harness(runs.BAD_OPTION, runs.BAD_INI)
def test_bad_option_value_is_a_usage_error_naming_its_source(harness: HarnessRuns) -> None:
    result = harness(runs.BAD_OPTION)
    assert result.returncode == EXIT_USAGE
    assert "ERROR: --run-timeout: expected a duration such as 20s or 5m, got 'soon'" in result.stderr
    result = harness(runs.BAD_INI)
    assert result.returncode == EXIT_USAGE
    assert re.search(r"ERROR: ini key model_status_timeout in \S*tox.ini: expected a duration", result.stderr)


@pytest.mark.harness(runs.HUGE_DURATION_CLI)
def test_a_duration_too_large_is_a_usage_error(harness: HarnessRuns) -> None:
    result = harness(runs.HUGE_DURATION_CLI)
    assert result.returncode == EXIT_USAGE, result
    assert "--status-timeout" in result.stderr
    no_traceback(result)


@pytest.mark.harness(runs.HUGE_DURATION_YAML)
def test_a_duration_too_large_in_model_yaml_is_one_line(harness: HarnessRuns) -> None:
    result = harness(runs.HUGE_DURATION_YAML)
    no_traceback(result)
    if result.returncode == EXIT_USAGE:
        assert "timeout.status" in result.stderr, result
    else:
        assert result.returncode == EXIT_NOT_EVALUATED, result
        (line,) = result.harness_lines()
        assert "timeout.status" in line, line
        assert result.json["verdict"] == "error"


@pytest.mark.harness(runs.REPORT_IS_A_FILE)
def test_a_report_directory_that_is_a_file_is_a_usage_error(harness: HarnessRuns) -> None:
    result = harness(runs.REPORT_IS_A_FILE)
    assert result.returncode == EXIT_USAGE, result
    assert "--conformance-report" in result.output
    no_traceback(result)


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(
            runs.DATA_WITHOUT_IMAGE, marks=pytest.mark.harness(runs.DATA_WITHOUT_IMAGE), id="model-data"
        ),
        pytest.param(
            runs.YAML_WITHOUT_IMAGE, marks=pytest.mark.harness(runs.YAML_WITHOUT_IMAGE), id="model-yaml"
        ),
    ],
)
def test_options_without_an_image_are_a_usage_error(harness: HarnessRuns, run: runs.Run) -> None:
    result = harness(run)
    assert result.returncode == EXIT_USAGE, result
    assert "but no image: add --model-image REF or --model-tar FILE" in result.stderr
    no_traceback(result)


@pytest.mark.harness(runs.MISSING_YAML_PATH, runs.MISSING_DATA_PATH)
def test_missing_paths_are_one_line(harness: HarnessRuns) -> None:
    result = harness(runs.MISSING_YAML_PATH)
    assert result.returncode == EXIT_NOT_EVALUATED
    one_harness_line(result, f"harness: model.yaml {result.cwd}/nowhere/model.yaml does not exist")
    result = harness(runs.MISSING_DATA_PATH)
    assert result.returncode == EXIT_NOT_EVALUATED
    one_harness_line(result, f"harness: the test-case directory {result.cwd}/nowhere does not exist")


@pytest.mark.harness(runs.SETUP_BOUND)
def test_a_preparation_past_the_bound_is_stopped_too(harness: HarnessRuns) -> None:
    result = harness(runs.SETUP_BOUND)
    assert not result.timed_out, f"the run went on past {runs.SETUP_BOUND.timeout} s with SIGINT ignored"
    assert result.returncode == EXIT_INTERRUPTED, result
    assert result.seconds < 120, result.seconds
    assert result.json["verdict"] == "incomplete"
    assert "ran past its bound" in result.stdout
    assert result.checks()["image.model-yaml"]["outcome"] == "not-run"


@pytest.mark.harness(runs.FIFO_YAML)
def test_a_model_yaml_that_is_a_fifo_is_refused_unopened(harness: HarnessRuns) -> None:
    result = harness(runs.FIFO_YAML)
    assert result.returncode == EXIT_NOT_EVALUATED, result
    one_harness_line(result, "harness: model.yaml */model.yaml is not a regular file")


@pytest.mark.harness(runs.YAML_NOT_YAML, runs.YAML_A_LIST)
def test_model_yaml_that_cannot_be_used(harness: HarnessRuns) -> None:
    for run, message in (
        (runs.YAML_NOT_YAML, "is not valid YAML"),
        (runs.YAML_A_LIST, "must be a mapping"),
    ):
        result = harness(run)
        assert result.returncode == EXIT_NOT_EVALUATED
        one_harness_line(result, f"*{message}*")


@pytest.mark.harness(runs.TWO_IMAGE_TAR)
def test_archive_with_several_images_lists_them(harness: HarnessRuns) -> None:
    result = harness(runs.TWO_IMAGE_TAR)
    assert result.returncode == EXIT_NOT_EVALUATED
    line = one_harness_line(result, "harness: * holds 2 images*")
    assert runs.LANGID in line and runs.tag("broken-status-html") in line


# -- the ini file and the command line ------------------------------------------------------------------


@pytest.mark.harness(runs.INI_AND_CLI)
def test_ini_paths_are_relative_to_the_ini_file_and_the_command_line_wins(harness: HarnessRuns) -> None:
    result = harness(runs.INI_AND_CLI)  # run from work/sub; pytest.ini in work/
    # The ini's model_image and its invalid model_run_timeout lose to the command line.
    assert result.returncode == 0, result
    report = result.dir / "work" / "ini-reports" / "conformance.json"  # model_report_dir: next to the ini
    assert report.is_file() and not (result.cwd / "ini-reports").exists()
    document = json.loads(report.read_text())
    assert document["verdict"] == "conformant"
    assert [entry["image"]["reference"] for entry in document["images"]] == [runs.LANGID]
    # model_data = data, next to the ini file: the test cases were found and passed.
    outcomes = {c["id"]: c["outcome"] for c in document["checks"]}
    assert outcomes == dict.fromkeys(CHECKS_MINI, "passed")


# -- the per-image time bound ----------------------------------------------------------------------------


@pytest.mark.harness(runs.BOUND)
def test_a_battery_past_its_bound_is_stopped_and_incomplete(harness: HarnessRuns) -> None:
    result = harness(runs.BOUND)
    # README: status timeout + (run checks + 5) x run timeout + 2 x shutdown timeout + 60 s.
    run_checks = 8  # no test cases: run.example, run.validation-error and the six others
    times = runs.BOUND_TIMEOUTS
    bound = times["status"] + (run_checks + 5) * times["run"] + 2 * times["shutdown"] + 60
    assert not result.timed_out, f"the run went on past {runs.BOUND.timeout} s with SIGINT ignored"
    assert result.returncode == EXIT_INTERRUPTED, result
    assert bound - 5 < result.seconds < bound + 20, (result.seconds, bound)
    assert result.json["verdict"] == "incomplete"
    assert "ran past its bound" in result.stdout
    assert len(result.containers) == 1  # it was stopped with its model started
    checks = result.checks()
    assert checks["status.ready"]["outcome"] != "passed"
    ids = [c["id"] for c in result.json["checks"]]
    after = result.json["checks"][ids.index("status.ready") + 1 :]
    assert after and all(c["outcome"] == "not-run" and c["message"] for c in after), after
    assert "verdict: conformant" not in result.stdout
