"""Hostile images, interruptions, kills: bounded time and memory, nothing read through a
link, nothing left behind, one clear line, and never a false pass."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import runs
from tests.expect import ALL_CHECKS, CHECKS_MINI, NOT_RUN, death_is_seen, failure_block, no_traceback
from tests.harness_api import BODY_CUT, EXIT_INTERRUPTED, EXIT_NOT_EVALUATED
from tests.harness_runs import HarnessRuns, Result

pytestmark = pytest.mark.docker

PEAK_RSS_LIMIT_KIB = 150 * 1024
LOG_TAIL_BYTES = 16 * 1024  # README: the container's log is read as a 16 KiB tail


RUN_EXAMPLES = {c for c in CHECKS_MINI if c.startswith("run.example[")}  # these runs have one case


def run_of(name: str) -> runs.Run:
    return runs.SAMPLE_RUNS[name]


# -- bounded: time, memory, reads ------------------------------------------------------------------


@pytest.mark.harness(run_of("hostile-huge-body"))
def test_huge_body_is_read_up_to_the_cap(harness: HarnessRuns) -> None:
    result = harness(run_of("hostile-huge-body"))
    assert result.returncode == 1
    assert result.with_outcome("failed") == {"status.schema"}
    assert BODY_CUT in result.stdout


@pytest.mark.harness(run_of("hostile-trickle"))
def test_trickling_answer_meets_the_status_timeout(harness: HarnessRuns) -> None:
    result = harness(run_of("hostile-trickle"))  # --status-timeout=8s, the body a byte a second
    assert result.returncode == 1
    assert result.with_outcome("failed") == {"status.ready"}
    ready = result.checks()["status.ready"]
    assert "still arriving" in ready["message"], ready
    # The exchange ends at the deadline, not when the 65-byte body would have arrived.
    assert ready["durationSeconds"] < 8 + 3, ready
    assert result.seconds < 30, f"an 8 s status timeout kept the run going for {result.seconds:.0f} s"


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(
            run_of("hostile-slow-headers"),
            marks=pytest.mark.harness(run_of("hostile-slow-headers")),
            id="plain",
        ),
        pytest.param(
            runs.SLOW_HEADERS_SIGINT_IGNORED,
            marks=pytest.mark.harness(runs.SLOW_HEADERS_SIGINT_IGNORED),
            id="sigint-ignored",
        ),
    ],
)
def test_headers_that_trickle_meet_the_status_timeout(harness: HarnessRuns, run: runs.Run) -> None:
    result = harness(run)  # --status-timeout=4s; the headers come a byte every 0.5 s
    assert not result.timed_out
    assert result.seconds < 20, f"a 4 s status timeout kept the run going for {result.seconds:.0f} s"
    assert result.returncode == 1, result
    # Whether a server that never finishes its headers counts as listening is open.
    failed = result.with_outcome("failed")
    assert "status.ready" in failed and failed <= {"status.ready", "image.port-env"}, failed
    assert result.with_outcome("error") == set()
    no_traceback(result)


@pytest.mark.harness(runs.LOG_FLOOD)
def test_the_log_of_a_flooding_container_is_read_as_a_bounded_tail(harness: HarnessRuns) -> None:
    result = harness(runs.LOG_FLOOD)
    assert "pause_error" not in result.facts, result.facts
    assert result.returncode == 1, result
    assert result.with_outcome("failed") == {"run.example[english]"}
    # The failure shows the log lines of its own time span, up to a 16 KiB tail, although the
    # container's log holds 256 MiB ...
    block = failure_block(result.stdout, "[run.example[english]]").split("container log (tail):\n", 1)[1]
    text = "\n".join(line[2:] for line in block.splitlines())
    assert 0 < len(text.encode()) <= LOG_TAIL_BYTES + 16
    # ... and the harness read a bounded amount from the engine for all of its run.
    assert result.facts["engine_bytes"] < 16 * 2**20, result.facts["engine_bytes"]


@pytest.mark.harness(run_of("hostile-huge-output"))
def test_a_huge_output_fails_in_bounded_memory(harness: HarnessRuns) -> None:
    result = harness(run_of("hostile-huge-output"))  # a 3 GiB sparse results.json
    assert result.returncode == 1, result
    failed = result.with_outcome("failed")
    assert RUN_EXAMPLES <= failed <= {*RUN_EXAMPLES, "run.output-written"}, failed
    message = result.checks()["run.example[english]"]["message"]
    assert re.search(r"maxSize|16 ?Ki?B?|16384", message), message
    assert result.peak_rss_kib is not None and result.peak_rss_kib < PEAK_RSS_LIMIT_KIB, result.peak_rss_kib
    no_traceback(result)


@pytest.mark.harness(run_of("hostile-billion-laughs"))
def test_a_billion_laughs_model_yaml_is_one_line_in_bounded_memory(harness: HarnessRuns) -> None:
    result = harness(run_of("hostile-billion-laughs"))
    assert result.returncode == EXIT_NOT_EVALUATED, result
    assert len(result.harness_lines()) == 1, result
    no_traceback(result)
    assert "MemoryError" not in result.output
    assert result.peak_rss_kib is not None and result.peak_rss_kib < PEAK_RSS_LIMIT_KIB, result.peak_rss_kib


@pytest.mark.harness(run_of("hostile-deep-json"))
def test_deeply_nested_json_fails_the_schema_check_without_a_traceback(harness: HarnessRuns) -> None:
    result = harness(run_of("hostile-deep-json"))
    assert result.returncode == 1, result
    assert result.outcomes()["status.schema"] == "failed"
    assert result.with_outcome("error") == set()
    no_traceback(result)
    assert "RecursionError" not in result.output


# -- a candidate cannot read through the harness --------------------------------------------------


def shadow_fragments() -> list[str]:
    """Pieces of the host's /etc/shadow that must never appear in what the harness shows."""
    try:
        text = Path("/etc/shadow").read_text(errors="replace")
    except OSError:
        pytest.skip("cannot read /etc/shadow here: nothing to leak")
    fragments = []
    for line in text.splitlines():
        user, _, rest = line.partition(":")
        if user and rest:
            fragments.append(f"{user}:{rest.split(':', 1)[0]}:")  # user:hash:
    return fragments


@pytest.mark.harness(run_of("hostile-output-symlink"))
def test_an_output_that_is_a_link_fails_and_nothing_is_read_through_it(harness: HarnessRuns) -> None:
    result = harness(run_of("hostile-output-symlink"))  # results.json -> /etc/shadow
    assert result.returncode == 1, result
    assert result.with_outcome("failed") == {*RUN_EXAMPLES, "run.output-written"}
    for check_id in (*RUN_EXAMPLES, "run.output-written"):
        assert "link" in result.checks()[check_id]["message"].lower(), result.checks()[check_id]
    for fragment in shadow_fragments():
        assert result.files_with(fragment) == [], f"{fragment!r} of /etc/shadow was published"


@pytest.mark.harness(run_of("hostile-output-fifo"))
def test_an_output_that_is_a_fifo_fails_without_a_hang(harness: HarnessRuns) -> None:
    result = harness(run_of("hostile-output-fifo"))
    assert result.returncode == 1, result
    assert result.seconds < 60
    assert result.with_outcome("failed") == {*RUN_EXAMPLES, "run.output-written"}
    message = result.checks()["run.output-written"]["message"]
    assert re.search(r"(?i)fifo|pipe|special|not a regular file", message), message


# -- no false pass ----------------------------------------------------------------------------------


@pytest.mark.harness(run_of("hostile-crash-during-run"))
def test_crash_during_run_fails_the_check_it_happened_in(harness: HarnessRuns) -> None:
    result = harness(run_of("hostile-crash-during-run"))
    assert result.returncode == 1
    assert result.with_outcome("failed") == {"run.example[english]"}
    assert "the container exited with code 70" in result.stdout
    outcomes = result.outcomes()
    for check_id in ("shutdown.response", "shutdown.exit-code", "run.not-json-415"):
        assert outcomes[check_id] in NOT_RUN


def assert_death_is_a_failure(result: Result) -> None:
    assert result.returncode == 1, result
    assert result.json["verdict"] == "nonconformant"
    death_is_seen(result.json["checks"], exit_code=3)
    assert result.with_outcome("error") == set()


@pytest.mark.parametrize(
    "run",
    [pytest.param(run, marks=pytest.mark.harness(run), id=run.name) for run in runs.DIES_AFTER_FIRST_ANSWER],
)
def test_a_model_that_dies_after_its_first_answer_is_never_conformant(
    harness: HarnessRuns, run: runs.Run
) -> None:
    assert_death_is_a_failure(harness(run))


# -- interruptions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signame", "moment"),
    [
        pytest.param(*key, marks=pytest.mark.harness(runs.INTERRUPTIONS[key]))
        for key in sorted(runs.INTERRUPTIONS)
    ],
)
def test_an_interrupted_run_is_incomplete_and_leaves_nothing(
    harness: HarnessRuns, signame: str, moment: str
) -> None:
    result = harness(runs.INTERRUPTIONS[(signame, moment)])["run"]
    assert result.returncode == EXIT_INTERRUPTED, result
    assert "verdict: conformant" not in result.stdout
    if moment == "waiting":
        assert len(result.containers) == 1, "the signal came before any container: this proves nothing"
    assert result.containers_left == [] and result.volumes_left == [] and result.tmp_left == []
    if moment == "active" and not result.has_json:
        return  # stopped before any check was collected: no report to write
    document = result.json
    assert document["verdict"] == "incomplete"
    assert "incomplete" in result.stdout.lower()
    outcomes = result.outcomes()
    assert outcomes.get("status.ready") != "passed"
    not_run = [c for c in document["checks"] if c["outcome"] == "not-run"]
    assert not_run and all(c["message"] for c in not_run), document["checks"]
    assert "shutdown.exit-code" in {c["id"] for c in not_run}
    if moment == "waiting":
        assert set(outcomes) == ALL_CHECKS
    html = result.report_dir / "conformance.html" if result.report_dir else None
    if html is not None and html.exists():
        text = html.read_text()
        assert "incomplete" in text.lower() and ">CONFORMANT<" not in text


@pytest.mark.harness(runs.KILLED_THEN_REAPED)
def test_a_killed_run_is_cleaned_up_by_the_next(harness: HarnessRuns) -> None:
    found = harness(runs.KILLED_THEN_REAPED)
    killed, following = found["killed"], found["next"]
    assert killed.facts["orphans"], "SIGKILL left no container: this test would prove nothing"
    assert following.returncode == 0, following
    assert killed.facts["orphans_left"] == [], "a later run did not remove what the killed run left"


@pytest.mark.harness(runs.BESIDE_A_LIVE_RUN)
def test_a_live_run_is_never_reaped(harness: HarnessRuns) -> None:
    found = harness(runs.BESIDE_A_LIVE_RUN)
    slow, quick = found["slow"], found["quick"]
    assert quick.returncode == 0, quick
    (slow_container,) = slow.containers
    (quick_container,) = quick.containers
    # The quick run reaps before it creates its container: the slow one's lived past that.
    assert slow_container.destroyed is not None and slow_container.destroyed > quick_container.created
    assert slow_container.name not in quick.stdout
    assert slow.returncode == 0, slow
    assert {c["outcome"] for c in slow.json["checks"]} == {"passed"}


# -- a signal whose KeyboardInterrupt is lost, a Ctrl-C as a container is created -------------------


@pytest.mark.parametrize(
    ("signame", "check"),
    [
        pytest.param(*key, marks=pytest.mark.harness(runs.LOST_SIGNALS[key]))
        for key in sorted(runs.LOST_SIGNALS)
    ],
)
def test_a_signal_lost_in_a_finalizer_still_stops_the_run(
    harness: HarnessRuns, signame: str, check: str
) -> None:
    result = harness(runs.LOST_SIGNALS[(signame, check)])
    assert result.returncode == EXIT_INTERRUPTED, result
    # incomplete; nonconformant only if a check failed before (on a machine loaded enough)
    assert result.json["verdict"] in ("incomplete", "nonconformant")
    assert result.json["interrupted"]
    assert "verdict: conformant" not in result.stdout
    ids = [c["id"] for c in result.json["checks"]]
    outcomes = result.outcomes()
    # The check under way when it came does not count; those before it ran, none ran after it.
    assert "not-run" not in {outcomes[i] for i in ids[: ids.index(check)]}, outcomes
    assert {outcomes[i] for i in ids[ids.index(check) :]} == {"not-run"}, outcomes
    assert result.containers_left == [] and result.volumes_left == []


@pytest.mark.harness(runs.SIGINT_IN_STATUS_POLL)
def test_ctrl_c_during_the_status_polls_stops_the_run_there(harness: HarnessRuns) -> None:
    result = harness(runs.SIGINT_IN_STATUS_POLL)
    assert result.returncode == EXIT_INTERRUPTED, result
    document = result.json
    assert document["verdict"] == "incomplete"
    # langid-slow-start answers 200 only after ~8 s: stopped at the first poll, it never was ready.
    assert document["containerImage"]["loadStatus"] != "Ready", document["loadSteps"]
    assert result.outcomes()["status.ready"] == "not-run"
    assert result.containers_left == [] and result.volumes_left == []


@pytest.mark.harness(runs.SIGINT_AS_CREATED)
def test_ctrl_c_as_the_container_is_created_leaves_no_container(harness: HarnessRuns) -> None:
    result = harness(runs.SIGINT_AS_CREATED)
    assert result.returncode == EXIT_INTERRUPTED, result
    (record,) = result.containers
    # Removed by the run itself, not by a later run's reaper (any run may reap what a dead run left).
    assert record.destroyed is not None and record.destroyed <= result.ended, record
    assert result.containers_left == [] and result.volumes_left == []
