"""How expected outputs are compared with what the model wrote (harness/compare.py): unit
tests with fakes, then runs against the real samples."""

from __future__ import annotations

import hashlib
import html
import json
import os
from pathlib import Path

import pytest

from harness import cases, compare
from harness.errors import SetupError
from harness.jobs import OUTPUT_KEEP, OutputFile
from tests import runs
from tests.harness_api import EXIT_USAGE
from tests.harness_runs import HarnessRuns
from tests.resources import DATA

EXACT = compare.Tolerance()


def held(name: str, content: bytes) -> OutputFile:
    return OutputFile(name, "file", len(content), content, hashlib.sha256(content).hexdigest())


def not_held(name: str, content: bytes) -> OutputFile:
    """An output larger than the harness holds: its size and digest only, as jobs.py reads it."""
    return OutputFile(name, "file", len(content), None, hashlib.sha256(content).hexdigest())


def expected_file(tmp_path: Path, content: bytes, name: str = "results.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def json_outcome(
    tmp_path: Path, actual: object, expected: object, tolerance: compare.Tolerance = EXACT
) -> compare.Outcome:
    path = expected_file(tmp_path, json.dumps(expected).encode())
    written = held("results.json", json.dumps(actual).encode())
    return compare.compare_output(
        "results.json", path, written, "application/json", compare_bytes=False, tolerance=tolerance
    )


# -- numbers: exact by default, or within a tolerance ------------------------------------------------


def test_numbers_are_exact_by_default_and_within_a_tolerance_when_given(tmp_path: Path) -> None:
    expected = {"scores": [0.123456789, 2.0, 1e-12]}
    actual = {"scores": [0.123456788, 2, 0.0]}
    outcome = json_outcome(tmp_path, actual, expected)
    assert outcome.mismatch is not None
    first, summary, *listed = outcome.mismatch.actual.splitlines()
    assert first == "$.scores[0]: expected 0.123456789, got 0.123456788 (off by 1e-09, relative 8.1e-09)"
    assert summary.startswith("2 differences; largest deviation 1e-09 (relative 1)")
    assert "tolerance exact" in summary
    assert [line.split(":")[0].strip() for line in listed] == ["$.scores[0]", "$.scores[2]"]
    # 2 and 2.0 are the same number. A relative tolerance does not cover 1e-12 against 0...
    rel = compare.Tolerance(1e-6, 0.0, "--rel-tol")
    outcome = json_outcome(tmp_path, actual, expected, rel)
    assert outcome.mismatch is not None and outcome.mismatch.actual.startswith("$.scores[2]: expected 1e-12")
    assert "tolerance rel 1e-06, abs 0 (--rel-tol)" in outcome.mismatch.actual
    # ...an absolute one does (math.isclose: |a - e| <= max(rel * max(|a|, |e|), abs)).
    both = compare.Tolerance(1e-6, 1e-9, "--rel-tol, --abs-tol")
    outcome = json_outcome(tmp_path, actual, expected, both)
    assert outcome.mismatch is None
    assert outcome.record["maxDeviation"] == pytest.approx(1e-9)
    assert outcome.record["maxRelativeDeviation"] == 1.0
    assert outcome.record["maxDeviationAt"] == "$.scores[0]"
    assert outcome.record["tolerance"] == "rel 1e-06, abs 1e-09 (--rel-tol, --abs-tol)"
    json.dumps(outcome.record, allow_nan=False)  # JSON-ready for the report


def test_bools_are_never_numbers_and_huge_integers_do_not_overflow(tmp_path: Path) -> None:
    loose = compare.Tolerance(1.0, 1.0)
    assert compare.json_difference({"x": True}, {"x": 1}, loose) == "$.x: expected 1, got true"
    assert compare.json_difference([False], [0.0], loose) == "$[0]: expected 0.0, got false"
    assert compare.json_difference(10**400, 10**400) is None
    assert compare.json_difference(10**400, 1.0, loose) is not None
    assert compare.json_difference(float("nan"), float("nan")) is None


def test_the_structural_diff_lists_every_path_capped(tmp_path: Path) -> None:
    expected = {"labels": [f"l{i}" for i in range(80)], "gone": 1}
    actual = {"labels": [f"x{i}" for i in range(80)], "extra": 2}
    outcome = json_outcome(tmp_path, actual, expected)
    assert outcome.mismatch is not None
    lines = outcome.mismatch.actual.splitlines()
    assert lines[0] == '$.labels[0]: expected "l0", got "x0"'
    assert lines[1] == "82 differences:"
    assert len(lines) == 2 + compare.DIFF_LINES + 1 and lines[-1] == "  ... and 32 more"


def test_a_text_output_fails_with_a_unified_diff(tmp_path: Path) -> None:
    path = expected_file(tmp_path, b"one\ntwo\nthree\n", "out.txt")
    written = held("out.txt", b"one\nTWO\nthree\n")
    outcome = compare.compare_output(
        "out.txt", path, written, "text/plain", compare_bytes=False, tolerance=EXACT
    )
    assert outcome.mismatch is not None
    first, *diff = outcome.mismatch.actual.splitlines()
    assert first.startswith("differs from byte 4 (14 bytes written, 14 expected)")
    assert "  -two" in diff and "  +TWO" in diff


# -- outputs over what the harness holds: by digest ------------------------------------------------


@pytest.mark.parametrize("media", ["application/json", "application/octet-stream"])
@pytest.mark.parametrize("compare_bytes", [False, True])
def test_an_output_too_large_to_hold_is_compared_by_its_digest(
    tmp_path: Path, media: str, compare_bytes: bool
) -> None:
    size = OUTPUT_KEEP + 1
    want = b'"' + b"A" * (size - 2) + b'"'
    path = expected_file(tmp_path, want)
    same = compare.compare_output(
        "results.json",
        path,
        not_held("results.json", want),
        media,
        compare_bytes=compare_bytes,
        tolerance=EXACT,
    )
    assert same.mismatch is None and same.method == "digest"
    other = not_held("results.json", b'"' + b"B" * (size - 2) + b'"')
    outcome = compare.compare_output(
        "results.json", path, other, media, compare_bytes=compare_bytes, tolerance=EXACT
    )
    assert outcome.mismatch is not None
    message = outcome.mismatch.actual
    assert "digest" in message and "not JSON" not in message, message
    if media == "application/json" and not compare_bytes:
        assert f"{size} bytes, too large to compare as JSON" in message
    shorter = not_held("results.json", want[:-1])
    outcome = compare.compare_output(
        "results.json", path, shorter, media, compare_bytes=compare_bytes, tolerance=EXACT
    )
    assert (
        outcome.mismatch is not None
        and f"{size - 1} bytes written, {size} expected" in outcome.mismatch.actual
    )


# -- tolerance files ----------------------------------------------------------------------------------


def test_tolerance_files_are_read_by_precedence_and_never_taken_for_case_files(tmp_path: Path) -> None:
    case_dir = tmp_path / "examples" / "one"
    case_dir.mkdir(parents=True)
    for name in ("input.txt", "results.json"):
        (case_dir / name).write_text("{}")
    declared = ("input.txt", "results.json")
    run_wide = compare.Tolerance(0.5, 0.0, "--rel-tol")
    assert compare.tolerance_for(case_dir, "results.json", declared, run_wide) == run_wide
    (case_dir / "tolerance.json").write_text('{"abs": 0.25}')
    found = compare.tolerance_for(case_dir, "results.json", declared, run_wide)
    assert (found.rel, found.abs, found.source) == (0.0, 0.25, "tolerance.json")
    (case_dir / "results.json.tolerance.json").write_text('{"rel": 1e-6, "abs": 0}')
    found = compare.tolerance_for(case_dir, "results.json", declared, run_wide)
    assert (found.rel, found.abs, found.source) == (1e-6, 0.0, "results.json.tolerance.json")
    # The case's files are found as before, with the extension ignored.
    case = cases.Case(cases.EXAMPLES, "one", case_dir)
    assert cases.resolve_inputs(case, ("input",), ("results",)) == {"input": case_dir / "input.txt"}
    assert cases.expected_outputs(case, ("results",), ("input",)) == {"results": case_dir / "results.json"}
    # A declared output "tolerance" is the author's file, not a tolerance.
    assert cases.expected_outputs(case, ("tolerance",)) == {"tolerance": case_dir / "tolerance.json"}
    assert compare.tolerance_for(case_dir, "tolerance", ("tolerance",), EXACT) == EXACT
    for bad, why in (
        ('{"rel": -1}', "rel must be a number >= 0"),
        ('{"rel": true}', "rel must be a number >= 0"),
        ('{"relative": 1}', "unknown key 'relative'"),
        ("[1e-6]", "not a JSON object"),
        ("1e-6 please", "not readable as JSON"),
    ):
        (case_dir / "results.json.tolerance.json").write_text(bad)
        with pytest.raises(SetupError, match=why):
            compare.tolerance_for(case_dir, "results.json", declared, EXACT)


# -- the author's comparison --------------------------------------------------------------------------


def test_the_authors_comparator_decides_first(tmp_path: Path) -> None:
    path = expected_file(tmp_path, b"\x89PNG expected")
    seen: list[dict[str, object]] = []

    def outcome_of(verdict: object) -> compare.Outcome:
        def comparator(**kwargs: object) -> object:
            seen.append(kwargs)
            return verdict

        return compare.compare_output(
            "mask.png",
            path,
            held("mask.png", b"\x89PNG written"),
            "image/png",
            compare_bytes=False,
            tolerance=EXACT,
            comparator=comparator,  # type: ignore[arg-type]
            case_name="one",
            case_dir=tmp_path,
        )

    assert outcome_of((True, "close enough")).mismatch is None
    assert seen[0] == {
        "name": "mask.png",
        "expected": b"\x89PNG expected",
        "actual": b"\x89PNG written",
        "media_type": "image/png",
        "case_name": "one",
        "case_dir": tmp_path,
    }
    rejected = outcome_of(compare.OutputVerdict(False, "IoU 0.41 < 0.9"))
    assert rejected.method == "hook" and rejected.mismatch is not None
    assert rejected.mismatch.actual == "IoU 0.41 < 0.9"
    assert "pytest_model_compare_output" in rejected.mismatch.expected
    assert outcome_of(None).method == "bytes"  # not the hook's: the default comparison
    with pytest.raises(SetupError, match="expected None, \\(passed, message\\) or an OutputVerdict"):
        outcome_of("yes")


# -- the outputs of a failed example, kept -----------------------------------------------------------


def test_kept_outputs_are_fresh_files_with_safe_names_and_never_follow_links(tmp_path: Path) -> None:
    report = tmp_path / "reports"
    outputs = {
        "results.json": held("results.json", b"{}"),
        "../escape": held("../escape", b"x"),
        "huge.bin": not_held("huge.bin", b"z" * 10),
        "missing": OutputFile("missing", "missing"),
    }
    kept, problems = compare.keep_outputs(report, ("registry:5000/team/model:1", "c" * 253), outputs)
    assert len(kept) == 2 and problems == ["huge.bin: 10 bytes, more than the harness holds"]
    for path in kept:
        assert ".." not in path.split("/") and all(len(part) < 100 for part in path.split("/"))
    assert (report / kept[0]).read_bytes() == b"{}" and kept[0].endswith("/results.json")
    assert not (tmp_path / "escape").exists()
    # An earlier run's file is replaced; a link in its place is refused, its target untouched.
    (report / kept[0]).write_bytes(b"old")
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    (report / kept[1]).unlink()
    (report / kept[1]).symlink_to(target)
    again, problems = compare.keep_outputs(report, ("registry:5000/team/model:1", "c" * 253), outputs)
    assert again == kept[:1] and (report / kept[0]).read_bytes() == b"{}"
    assert target.read_bytes() == b"precious" and any("left alone" in p for p in problems), problems
    # A linked directory is not entered.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (report / "outputs" / "linked").symlink_to(elsewhere)
    none, problems = compare.keep_outputs(report, ("linked", "case"), outputs)
    assert none == [] and problems and os.listdir(elsewhere) == []


# -- against the real samples ------------------------------------------------------------------------


@pytest.mark.harness(runs.NUDGED)
def test_a_number_off_in_its_9th_digit_fails_exact_and_the_output_is_kept(harness: HarnessRuns) -> None:
    result = harness(runs.NUDGED)
    assert result.returncode == 1, result
    checks = result.checks()
    english = checks["run.example[english]"]
    assert english["outcome"] == "failed", english
    first = english["message"].splitlines()[1]
    assert "$.meanLogProbability.de: expected -6.54770001, got -6.5477 (off by 1e-08" in first, english
    assert "1 difference; largest deviation 1e-08" in english["message"]
    # What the model wrote is kept in the report directory, and linked from the HTML.
    (saved,) = english["savedOutputs"]
    assert saved.startswith("outputs/") and saved.endswith("/english/results.json")
    assert result.report_dir is not None
    assert (result.report_dir / saved).read_bytes() == (
        DATA / "examples" / "english" / "results.json"
    ).read_bytes()
    page = html.unescape((result.report_dir / "conformance.html").read_text())
    # Linked from the failed check's row and from the failed checks listed at the top.
    assert page.count(f"<a href='{saved}'>") >= 2, page.count(f"<a href='{saved}'>")
    # german is off the same way, within the tolerance of its results.json.tolerance.json.
    german = checks["run.example[german]"]
    assert german["outcome"] == "passed", german
    (compared,) = german["comparisons"]
    assert compared["tolerance"] == "rel 1e-06, abs 0 (results.json.tolerance.json)"
    assert (
        compared["maxDeviation"] == pytest.approx(1e-8)
        and compared["maxDeviationAt"] == "$.meanLogProbability.de"
    )
    # The author's hook (conftest.py) decides french and spanish.
    french = checks["run.example[french]"]
    assert french["outcome"] == "passed", french
    assert french["comparisons"] == [
        {"output": "results.json", "method": "hook", "message": "accepted by the author's own comparison"}
    ]
    spanish = checks["run.example[spanish]"]
    assert spanish["outcome"] == "failed", spanish
    assert f"{runs.HOOK_REJECTS} results.json" in spanish["message"], spanish
    assert "pytest_model_compare_output" in spanish["message"]
    assert checks["run.example[italian-no-extension]"]["outcome"] == "passed"
    assert "savedOutputs" not in checks["run.example[italian-no-extension]"]


@pytest.mark.harness(runs.NUDGED_REL_TOL)
def test_a_relative_tolerance_accepts_a_number_off_in_its_9th_digit(harness: HarnessRuns) -> None:
    result = harness(runs.NUDGED_REL_TOL)
    assert result.returncode == 0, result
    english = result.checks()["run.example[english]"]
    assert english["outcome"] == "passed", english
    (compared,) = english["comparisons"]
    assert compared["method"] == "json" and compared["tolerance"] == "rel 1e-06, abs 0 (--rel-tol)"
    assert compared["maxRelativeDeviation"] == pytest.approx(1e-8 / 6.5477, rel=1e-3)


@pytest.mark.harness(runs.BAD_TOLERANCE, runs.BAD_TOLERANCE_INI)
def test_a_bad_tolerance_is_a_usage_error_naming_its_source(harness: HarnessRuns) -> None:
    result = harness(runs.BAD_TOLERANCE)
    assert result.returncode == EXIT_USAGE, result
    assert "ERROR: --abs-tol: expected a number >= 0 such as 1e-6, got '-1'" in result.stderr
    result = harness(runs.BAD_TOLERANCE_INI)
    assert result.returncode == EXIT_USAGE, result
    assert "ERROR: ini key model_rel_tol in " in result.stderr and "got 'a little'" in result.stderr


@pytest.mark.harness(runs.BIG_OUTPUT, runs.BIG_OUTPUT_COMPARE_BYTES)
def test_an_output_over_32_mib_is_compared_by_its_digest(harness: HarnessRuns) -> None:
    for run, too_large in (
        (runs.BIG_OUTPUT, "too large to compare as JSON"),
        (runs.BIG_OUTPUT_COMPARE_BYTES, "compared by SHA-256 digest"),
    ):
        result = harness(run)
        assert result.returncode == 1, result
        checks = result.checks()
        same = checks["run.example[same]"]
        assert same["outcome"] == "passed", same
        assert same["comparisons"] == [{"output": "results.json", "method": "digest"}]
        different = checks["run.example[different]"]
        assert different["outcome"] == "failed", different
        message = different["message"]
        assert too_large in message and "not JSON" not in message, message
        size = (result.cwd / "data" / "examples" / "different" / "results.json").stat().st_size
        assert size > runs.BIG_OUTPUT_BYTES and f"{size} bytes" in message, message  # the same size
        assert "outputs not kept: results.json: " in message
        assert result.with_outcome("failed") == {"run.example[different]"}, result
