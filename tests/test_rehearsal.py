"""The platform rehearsal's resource figures, and what a failure says of a model's exit."""

from __future__ import annotations

import os
import re
import threading
import time
from html import escape
from typing import Any

import pytest

from harness import report
from harness.dockerengine import localfs
from harness.lifetime import explaining_line
from harness.rehearsal import Rehearsal, ResourceFigures, ResourceSampler, Timing
from harness.units import parse_engine_time
from tests import runs
from tests.harness_runs import HarnessRuns

MIB = 2**20
TRACEBACK = """\
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/opt/app/langid_app/serve.py", line 5, in <module>
    import torch
ModuleNotFoundError: No module named 'torch'
"""


def stats(
    read: str, usage: int, cpu: float, *, max_usage: int | None = None, inactive: int = 0
) -> dict[str, Any]:
    """An engine's stats answer, as cgroup v1 gives it (max_usage) or v2 (without)."""
    memory: dict[str, Any] = {"usage": usage, "stats": {"total_inactive_file": inactive}}
    if max_usage is not None:
        memory["max_usage"] = max_usage
    return {
        "read": read,
        "memory_stats": memory,
        "cpu_stats": {"cpu_usage": {"total_usage": int(cpu * 1e9)}, "online_cpus": 2},
    }


# -- figures, from stats answers --------------------------------------------------------------------


def test_one_read_at_the_start_gives_no_cpu_average() -> None:
    # The read that comes as the container starts: a burst of CPU in a few milliseconds.
    figures = ResourceFigures()
    figures.count(stats("2026-12-01T21:51:04.571584080Z", 1 * MIB, 0.045), "a")
    average, source = figures.cpu_average(1.0)
    assert average is None and source.startswith("not measured"), source


def test_one_read_a_second_after_the_start_gives_the_average_since_the_start() -> None:
    # A model ready in under a second: its one read after the last /run is enough.
    figures = ResourceFigures()
    started = "2026-12-01T21:51:04.250000000Z"
    figures.count(stats("2026-12-01T21:51:04.260Z", 1 * MIB, 0.005), "a", started=started)  # at the start
    figures.count(stats("2026-12-01T21:51:05.850Z", 30 * MIB, 0.4), "a", started=started)
    average, source = figures.cpu_average(1.0)
    assert average == pytest.approx(0.25)
    assert "1.6 s apart" in source


def test_cpu_average_is_taken_between_reads_far_enough_apart() -> None:
    figures = ResourceFigures()
    figures.count(stats("2026-12-01T21:51:04.5Z", 5 * MIB, 0.2), "a")
    figures.count(stats("2026-12-01T21:51:06.5Z", 40 * MIB, 0.7), "a")
    average, source = figures.cpu_average(1.0)
    assert average == pytest.approx(0.25)
    assert "2.0 s apart" in source


def test_an_impossible_cpu_average_is_not_given() -> None:
    figures = ResourceFigures()
    figures.count(stats("2026-12-01T21:51:04.5Z", 5 * MIB, 0.2), "a")
    figures.count(stats("2026-12-01T21:51:05.5Z", 5 * MIB, 4.7), "a")  # 4.5 CPUs of 1
    average, source = figures.cpu_average(1.0)
    assert average is None and "more than the container could use" in source


def test_cpu_reads_of_two_containers_are_not_mixed() -> None:
    # A model started again (checks after /shutdown) starts its CPU time from zero.
    figures = ResourceFigures()
    figures.count(stats("2026-12-01T21:51:04.5Z", 5 * MIB, 3.0), "first")
    figures.count(stats("2026-12-01T21:51:06.5Z", 5 * MIB, 0.1), "second")
    assert figures.cpu_average(1.0)[0] is None


def test_the_high_water_mark_holds_a_peak_between_samples() -> None:
    figures = ResourceFigures()
    figures.count(stats("2026-12-01T21:51:04.5Z", 35 * MIB, 0.2, inactive=22 * MIB), "a")
    assert figures.peak_bytes == 13 * MIB
    source = figures.peak_source()
    assert source is not None and "1 sample(s)" in source and "no high-water mark" in source
    figures.count(stats("2026-12-01T21:51:05.5Z", 35 * MIB, 0.2, max_usage=58 * MIB, inactive=22 * MIB), "a")
    assert figures.peak_bytes == 36 * MIB
    source = figures.peak_source()
    assert source is not None and "not after the last /run" in source
    # After the last /run: it touched 200 MiB between two samples.
    final = stats("2026-12-01T21:51:06.5Z", 58 * MIB, 0.3, max_usage=280 * MIB, inactive=22 * MIB)
    figures.count(final, "a", final=True)
    assert figures.peak_bytes == 258 * MIB
    assert figures.cgroup_max_bytes == 280 * MIB
    source = figures.peak_source()
    assert source is not None and "high-water mark, read after the last /run" in source


def test_a_sample_above_the_high_water_estimate_says_so() -> None:
    figures = ResourceFigures()
    figures.count(stats("2026-12-01T21:51:04.5Z", 250 * MIB, 0.2, max_usage=270 * MIB, inactive=0), "a")
    final = stats("2026-12-01T21:51:05.5Z", 60 * MIB, 0.3, max_usage=270 * MIB, inactive=30 * MIB)
    figures.count(final, "a", final=True)
    assert figures.peak_bytes == 270 * MIB  # the first read's estimate, no inactive cache then
    figures = ResourceFigures()
    figures.count(stats("2026-12-01T21:51:04.5Z", 250 * MIB, 0.2, max_usage=250 * MIB), "a", final=True)
    source = figures.peak_source()
    assert figures.peak_bytes == 250 * MIB and source is not None
    assert source.endswith(
        "above the cgroup's high-water mark less its inactive file cache, read after the last /run"
    )


def test_without_a_high_water_mark_the_peak_says_it_is_sampled() -> None:
    figures = ResourceFigures()  # cgroup v2: no max_usage
    figures.count(stats("2026-12-01T21:51:04.5Z", 40 * MIB, 0.2), "a", final=True)
    assert figures.peak_bytes == 40 * MIB and figures.cgroup_max_bytes is None
    source = figures.peak_source()
    assert source is not None and "a peak between two samples is missed" in source


def test_a_peak_near_the_declared_memory_is_a_warning_and_an_orange_bar() -> None:
    found = Rehearsal(512 * MIB, 1.0, 0, Timing(60.0, 5.0), Timing(60.0, 0.37))
    found.resources.count(
        stats("2026-12-01T21:51:04.5Z", 462 * MIB, 1.0, max_usage=470 * MIB), "a", final=True
    )
    (warning,) = found.warnings()
    assert warning.startswith("memory peak 470 MiB is 92% of the 512 MiB declared (more than 80%)"), warning
    html = report.rehearsal_html(found.as_dict(), found.warnings())
    assert "#bc4c00" in html and "high-water mark" in html
    assert found.as_dict()["memory"]["peakSource"] == found.resources.peak_source()


class SlowStats:
    """A container whose engine answers each stats read at its next collection, when released."""

    container_id = "a"
    engine_started_at = None

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.collect = threading.Event()
        self.high_water = 60 * MIB
        self._asking = threading.Condition()

    def stats(self, timeout: float) -> dict[str, Any] | None:
        with self._asking:
            self.asked.append(time.monotonic())
            self._asking.notify_all()
        if not self.collect.wait(timeout):
            return None
        return stats("2026-12-01T21:51:06.5Z", 50 * MIB, 0.3, max_usage=self.high_water)

    def wait_asked(self, count: int) -> None:
        """The reads started on their own threads have asked (within 10 s)."""
        with self._asking:
            self._asking.wait_for(lambda: len(self.asked) >= count, timeout=10)


def test_the_read_after_the_last_run_is_started_when_it_ends_and_not_asked_again() -> None:
    engine = SlowStats()
    figures = ResourceFigures()
    sampler = ResourceSampler(engine, figures)  # type: ignore[arg-type]  # never started: no periodic reads
    sampler.after_run()
    sampler.after_run()  # the last /run: a read starts at once, before the shutdown
    engine.wait_asked(2)  # each on a thread of its own
    assert len(engine.asked) == 2
    engine.high_water = 250 * MIB  # the engine's collection comes after the last /run
    threading.Timer(0.2, engine.collect.set).start()
    sampler.final()  # waits for that read, asks for no other
    assert len(engine.asked) == 2
    assert figures.final_read and figures.peak_bytes == 250 * MIB and figures.peak_from_high_water
    sampler.after_run()  # after final(): nothing asked, nothing counted
    assert len(engine.asked) == 2 and figures.samples == 2


def test_without_a_read_started_after_the_last_run_the_final_read_is_made_then() -> None:
    engine = SlowStats()
    engine.collect.set()
    figures = ResourceFigures()
    sampler = ResourceSampler(engine, figures)  # type: ignore[arg-type]
    sampler.final()  # no /run: one read, as before
    assert len(engine.asked) == 1 and figures.final_read


def test_figures_from_a_cgroup_are_only_those_of_the_containers_own_group() -> None:
    # This process's groups do not hold that id: a reused PID is never read as the container.
    assert localfs.cgroup_stats(os.getpid(), "0123456789abcdef" * 4) is None
    assert localfs.cgroup_stats(0, "0123456789abcdef") is None


def test_engine_times() -> None:
    assert parse_engine_time("0001-01-01T00:00:00Z") is None
    assert parse_engine_time("soon") is None
    one = parse_engine_time("2026-12-01T21:51:04.571584080Z")
    assert one is not None and one % 1 == pytest.approx(0.571584080)


# -- the line that explains an exit -------------------------------------------------------------------


def test_the_explaining_line_is_an_exceptions_last_line() -> None:
    assert explaining_line(TRACEBACK) == "ModuleNotFoundError: No module named 'torch'"
    gunicorn = TRACEBACK + "[2026-12-01 21:00:00 +0000] [1] [INFO] Reason: Worker failed to boot.\n"
    assert explaining_line(gunicorn) == "ModuleNotFoundError: No module named 'torch'"
    assert explaining_line("langid: refusing to start\n\n") == "langid: refusing to start"
    assert explaining_line("") is None
    long = explaining_line("x" * 1000)
    assert long is not None and len(long) == 200


# -- against real images ------------------------------------------------------------------------------


@pytest.mark.docker
def test_on_a_local_engine_the_figures_are_the_engines_read_at_once() -> None:
    import docker

    from harness.dockerengine import calls
    from sample_models import build

    client = docker.from_env(version="auto")
    container = client.containers.run(
        build.CONFORMANT.tag, detach=True, environment={"PSC_MODEL_PORT": "23459"}, mem_limit=256 * MIB
    )
    try:
        container.reload()
        time.sleep(2)  # ready and idle: its figures hold still
        engine = calls.stats(client, container, 5.0)  # collected just before its answer
        began = time.monotonic()
        local = localfs.cgroup_stats(container.attrs["State"]["Pid"], str(container.id))
        took = time.monotonic() - began
    finally:
        container.remove(force=True)
        client.close()
    assert local is not None and engine is not None
    assert took < 0.1  # the engine answers at its next collection, up to a second away
    for figures in (ResourceFigures(), ResourceFigures()):
        assert figures.count(local, "a") == pytest.approx(figures.count(engine, "a"), rel=0.1)
    # A high-water mark where the engine gives one (cgroup v1), none where it does not (v2).
    ours, theirs = local["memory_stats"].get("max_usage"), engine["memory_stats"].get("max_usage")
    assert (ours is None) == (theirs is None)
    assert theirs is None or ours == pytest.approx(theirs, rel=0.1)
    assert parse_engine_time(local["read"]) == pytest.approx(parse_engine_time(engine["read"]), abs=2)


@pytest.mark.docker
@pytest.mark.harness(runs.REHEARSAL_QUICK)
def test_a_quick_model_has_its_figures(harness: HarnessRuns) -> None:
    result = harness(runs.REHEARSAL_QUICK)  # langid without test cases: ready in under a second
    assert result.returncode == 0, str(result)
    found = result.json["rehearsal"]
    memory, cpu = found["memory"], found["cpu"]
    # docker stats shows about 35 MiB for this model idle: the figure is not the start's 1 MiB.
    assert memory["peakBytes"] is not None and memory["peakBytes"] > 15 * MIB, found
    assert "high-water mark" in memory["peakSource"], found
    assert memory["samples"] >= 1
    assert cpu["averageUsed"] is not None and 0 < cpu["averageUsed"] <= cpu["declared"] + 0.1, found
    assert "apart" in cpu["averageSource"]
    assert report.validate(result.json) == []
    assert result.report_dir is not None
    html = (result.report_dir / "conformance.html").read_text()
    assert escape(memory["peakSource"]) in html and escape(cpu["averageSource"]) in html


@pytest.mark.docker
@pytest.mark.harness(runs.SAMPLE_RUNS["langid-run-allocates"])
def test_a_peak_during_a_short_run_is_seen(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["langid-run-allocates"])  # 200 MiB touched, freed before the answer
    assert result.returncode == 0, str(result)
    memory = result.json["rehearsal"]["memory"]
    assert memory["peakBytes"] >= 200 * MIB, memory
    assert memory["declaredBytes"] == 512 * MIB
    # The memory at ready is never a read made during a /run (about 40 MiB here, or none).
    assert memory["atReadyBytes"] is None or memory["atReadyBytes"] < 150 * MIB, memory


@pytest.mark.docker
@pytest.mark.harness(runs.SAMPLE_RUNS["broken-memory-hog"])
def test_a_peak_at_the_declared_memory_is_a_warning(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-memory-hog"])  # its worker is killed at each /run
    assert result.checks()["status.ready"]["outcome"] == "passed", str(result)
    assert any(w.startswith("memory peak") for w in result.json["warnings"]), result.json["rehearsal"]


@pytest.mark.docker
@pytest.mark.harness(runs.SAMPLE_RUNS["broken-missing-dependency"])
def test_an_exit_at_start_names_its_cause_first(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-missing-dependency"])
    assert result.returncode == 1 and result.with_outcome("failed") == {"status.ready"}, str(result)
    message = result.checks()["status.ready"]["message"]
    first_lines = message.splitlines()[:2]
    assert any("ModuleNotFoundError: No module named 'torch'" in line for line in first_lines), message
    assert "the container exited with code 1 during start-up" in message


@pytest.mark.docker
@pytest.mark.harness(runs.SAMPLE_RUNS["hostile-crash-during-run"])
def test_an_exit_during_a_check_names_its_cause(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["hostile-crash-during-run"])
    message = result.checks()["run.example[english]"]["message"]
    # The log's last line follows the exit code (here gunicorn's own, after the model's).
    assert re.search(r"exited with code 70: \S", message.splitlines()[1]), message
