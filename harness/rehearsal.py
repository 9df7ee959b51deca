"""Platform rehearsal: what the platform's own load and run tests will measure, measured here first.

While the battery runs, a sampler reads the container's memory and CPU use from the
engine (its one-shot stats endpoint, which answers at its next collection, within about a
second; a local engine's figures are read at once from the container's cgroup), and once
more after each /run for the cgroup's high-water mark (the read after the last one holds
a /run too short for any sample); the figures are set against what model.yaml declares,
and the timings against the timeouts. What fails an image and what is only a warning is
written in docs/contract.md#rehearsal.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .options import DEFAULT_MARGIN
from .runtime import ModelProcess
from .units import parse_engine_time

SAMPLE_EVERY = 0.5  # seconds between two reads of the container's stats
STATS_DEADLINE = 5.0  # the longest one stats read may take (the engine answers within its cycle, ~1 s)
MIN_CPU_SPAN = 0.5  # seconds between the two points (the start, reads) an average CPU use rests on, at least
CPU_SLACK = 0.1  # CPUs: the quota is enforced per 100 ms period, the reads' times are not exact
MAX_READS_AFTER_RUNS = 8  # reads after /run answers under way at once, at most
NEAR_MEMORY = 0.8  # a peak above this share of the declared memory is a warning
TEXT_TYPES = ("text/plain", "text/csv", "text/markdown")


@dataclass(frozen=True)
class CpuRead:
    at: float  # the engine's time of the read (Unix seconds)
    used: float  # CPU seconds the container used since its start


@dataclass
class ResourceFigures:
    peak_bytes: int | None = None  # the largest working set known (usage less inactive file cache)
    peak_from_high_water: bool = False  # from the cgroup's high-water mark, not from a sample
    at_ready_bytes: int | None = None
    cgroup_max_bytes: int | None = None  # the cgroup's own high-water mark, page cache included
    samples: int = 0
    final_read: bool = False  # read after the last /run
    sampled_seconds: float = 0.0  # from the first read to the last
    online_cpus: int | None = None
    # Per container (a model started again starts from zero): its first and last CPU reads.
    cpu_reads: dict[str, tuple[CpuRead, CpuRead]] = field(default_factory=dict)
    _first_read: float | None = None

    def count(
        self, stats: dict[str, Any], container_id: str, *, final: bool = False, started: str | None = None
    ) -> int | None:
        """Count one stats read; the working set it shows, or None when it shows no memory.

        ``started``: the container's start as the engine wrote it; its CPU time counts from
        then (a new cgroup starts at zero), so one read after a second gives an average.
        """
        memory = stats.get("memory_stats") or {}
        usage = _number(memory.get("usage"))
        if usage is None:  # the container is gone, or not started
            return None
        working = usage - _inactive_file(memory, usage)
        self.samples += 1
        now = time.monotonic()
        self._first_read = self._first_read or now
        self.sampled_seconds = now - self._first_read
        if self.peak_bytes is None or working > self.peak_bytes:
            self.peak_bytes, self.peak_from_high_water = working, False
        self.final_read = self.final_read or final
        high_water = _number(memory.get("max_usage"))  # cgroup v1 only
        if high_water is not None:
            self.cgroup_max_bytes = max(self.cgroup_max_bytes or 0, high_water)
            # The high-water mark is kept by the kernel: it holds the peaks between two
            # samples (a short /run). Less the file cache that could be reclaimed at its
            # read, it counts memory as docker stats does.
            estimate = high_water - _inactive_file(memory, high_water)
            if estimate > self.peak_bytes:
                self.peak_bytes, self.peak_from_high_water = estimate, True
        cpu_stats = stats.get("cpu_stats") or {}
        online = _number(cpu_stats.get("online_cpus"))
        if online:
            self.online_cpus = online
        used = _number((cpu_stats.get("cpu_usage") or {}).get("total_usage"))
        at = parse_engine_time(stats.get("read"))
        if used is not None and at is not None:
            read = CpuRead(at, used / 1e9)
            began = parse_engine_time(started)
            start = CpuRead(began, 0.0) if began is not None and began < at else read
            first, _last = self.cpu_reads.get(container_id, (start, read))
            self.cpu_reads[container_id] = (first, read)
        return working

    def peak_source(self) -> str | None:
        if self.peak_bytes is None:
            return None
        when = "after the last /run" if self.final_read else "at the last sample, not after the last /run"
        if self.peak_from_high_water:
            return (
                f"the cgroup's high-water mark, read {when}, less its inactive file cache "
                f"(as docker stats counts memory); {self.samples} read(s) of the engine"
            )
        sampled = f"the largest of {self.samples} sample(s) over {self.sampled_seconds:.1f} s"
        if self.cgroup_max_bytes is not None:
            return f"{sampled}, above the cgroup's high-water mark less its inactive file cache, read {when}"
        return f"{sampled}: a peak between two samples is missed (the engine gives no high-water mark)"

    def cpu_average(self, limit: float | None) -> tuple[float | None, str]:
        """The average CPUs used between the two points furthest apart (the container's start
        and its last read, or two reads), and where it comes from."""
        spans = [(last.at - first.at, last.used - first.used) for first, last in self.cpu_reads.values()]
        seconds, used = max(spans, default=(0.0, 0.0))
        if seconds < MIN_CPU_SPAN:
            return None, f"not measured: no two reads of the engine at least {MIN_CPU_SPAN:g} s apart"
        average = used / seconds
        bounds = [b for b in (limit, self.online_cpus) if b]
        possible = min(bounds, default=None)
        if average < 0 or (possible is not None and average > possible + CPU_SLACK):
            return None, (
                f"not measured: the engine's reads give {average:.2f} CPUs, more than the container "
                f"could use ({possible:g})"
            )
        return average, f"CPU time between two points of the engine's clock {seconds:.1f} s apart"


def _number(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _inactive_file(memory: dict[str, Any], usage: int) -> int:
    """The inactive file cache (cgroup v1: total_inactive_file; v2: inactive_file), if below usage."""
    detail = memory.get("stats") or {}
    inactive = _number(detail.get("total_inactive_file", detail.get("inactive_file")))
    return inactive if inactive is not None and inactive < usage else 0


class ResourceSampler:
    """Reads the container's stats every SAMPLE_EVERY seconds on a thread of its own, and once
    after each /run answered (see ``after_run``)."""

    def __init__(
        self, container: ModelProcess, figures: ResourceFigures, every: float = SAMPLE_EVERY
    ) -> None:
        self._container = container
        self._every = every
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._busy = threading.Event()  # a job was sent since ready
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the sampler's reads and the final one count one at a time
        self._read_done = threading.Condition(self._lock)  # a read after a /run ended
        self._closed = False  # no read counts any more
        self._runs = 0  # /run exchanges so far
        self._runs_asked = 0  # the most of them a read after a /run was started after
        self._runs_read = 0  # the most of them a counted read was started after
        self._reads_under_way = 0  # reads after a /run not ended yet
        self.figures = figures  # shared by the samplers of a model that is started again

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="psc-harness-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # Only this thread asks the engine: a stats read may wait for the engine's next
        # collection cycle (up to a second), which the checks must never wait for.
        while not self._stop.is_set():
            idle = self._ready.is_set() and not self._busy.is_set()
            working = self.sample()
            # At ready: a read made wholly between ready and the first job, else none.
            idle = idle and not self._busy.is_set()
            if idle and self.figures.at_ready_bytes is None and working is not None:
                self.figures.at_ready_bytes = working
            self._stop.wait(self._every)

    def sample(self, *, final: bool = False, after_run: bool = False) -> int | None:
        """Read the stats once; the working set now, or None when they cannot be read."""
        container_id = self._container.container_id
        if container_id is None:
            return None
        stats = self._container.stats(STATS_DEADLINE)
        if stats is None:
            return None
        with self._lock:
            if self._closed or (self._stop.is_set() and not (final or after_run)):
                return None  # the model is being stopped: its way out is not what it uses
            started = self._container.engine_started_at
            return self.figures.count(stats, container_id, final=final, started=started)

    def after_run(self) -> None:
        """A /run exchange ended: a read starts now, on a thread of its own, so that the read
        after the last /run is under way (often done) when the model is to be shut down.

        The engine answers a stats read at its next collection, up to a second away: started
        here, that wait overlaps the checks that follow instead of delaying /shutdown.
        """
        with self._lock:
            if self._closed or self._stop.is_set():
                return
            self._runs += 1
            if self._reads_under_way >= MAX_READS_AFTER_RUNS:
                return  # a flood of short jobs: final() reads itself
            self._reads_under_way += 1
            self._runs_asked = self._runs
            runs = self._runs
        threading.Thread(
            target=self._read_after_run, args=(runs,), name="psc-harness-after-run", daemon=True
        ).start()

    def _read_after_run(self, runs: int) -> None:
        counted = False
        try:
            counted = self.sample(after_run=True) is not None
        finally:
            with self._lock:
                self._reads_under_way -= 1
                if counted:
                    self._runs_read = max(self._runs_read, runs)
                self._read_done.notify_all()

    def final(self) -> None:
        """Stop sampling; then the high-water mark after the last /run, whatever the model's
        speed (a short peak falls between two samples), synchronous and bounded: the read
        started after the last /run if it is counted by then, else one last read now."""
        deadline = time.monotonic() + STATS_DEADLINE
        with self._lock:
            self._stop.set()
            self._thread = None
            if self._runs and self._runs_asked == self._runs:
                while self._runs_read < self._runs and self._reads_under_way:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._read_done.wait(left)
            done = bool(self._runs) and self._runs_read == self._runs
            if done:
                self.figures.final_read = True
        if not done:
            self.sample(final=True)
        with self._lock:
            self._closed = True  # a read still under way ends on its own, not counted

    def mark_ready(self) -> None:
        """The next sample is the memory at ready (taken by the sampler, not by the caller)."""
        self._ready.set()

    def mark_busy(self) -> None:
        """A job is sent: a read from now on is no longer the memory at ready."""
        self._busy.set()

    def stop(self) -> None:
        """Stop sampling; a read under way ends on its own, its figures no longer counted."""
        with self._lock:
            self._stop.set()
            self._closed = True
        self._thread = None


def sniff(content: bytes) -> str | None:
    """The media type the content shows, by its magic numbers; text/plain for UTF-8 text."""
    import puremagic  # imported on use: it loads its signature table

    if not content:
        return None
    with contextlib.suppress(puremagic.PureError, ValueError):
        found = puremagic.from_string(content[: 64 * 1024], mime=True)
        if found:
            return str(found)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text/plain" if all(c.isprintable() or c in "\t\r\n" for c in text[:4096]) else None


def media_type_problem(declared: str, content: bytes) -> str | None:
    """Why the content is not of its declared media type, or None when it is (or cannot be told)."""
    import json

    declared = declared.split(";", 1)[0].strip().lower()
    if declared == "application/json" or declared.endswith("+json"):
        try:
            json.loads(content)
        except (ValueError, RecursionError):
            return "it is not JSON"
        return None
    found = sniff(content)
    if found is None or found == declared:
        return None
    if declared.startswith("text/") and found == "text/plain":
        return None  # text of some kind: the sniffer cannot tell CSV from plain text
    if declared in ("application/octet-stream",):
        return None
    return f"its content is {found}"


def accepted(types: tuple[str, ...], content: bytes) -> bool:
    """Whether content could be of one of the accepted media types (when the sniffer can tell)."""
    return not types or any(media_type_problem(t, content) is None for t in types)


@dataclass
class Timing:
    timeout: float
    seconds: float | None = None  # the slowest seen

    def left(self) -> float | None:
        return None if self.seconds is None else max(0.0, 1 - self.seconds / self.timeout)


@dataclass
class Rehearsal:
    """The figures of one image's rehearsal, and the warnings they call for."""

    memory_declared: int | None
    cpu_declared: float | None
    gpu_declared: int
    status: Timing
    run: Timing
    resources: ResourceFigures = field(default_factory=ResourceFigures)
    margin: float = DEFAULT_MARGIN

    def warnings(self) -> list[str]:
        found = []
        for name, timing, option in (
            ("ready", self.status, "status"),
            ("the slowest /run answered", self.run, "run"),
        ):
            left = timing.left()
            if left is not None and left < self.margin:
                found.append(
                    f"{name} after {timing.seconds:.1f} s of the {timing.timeout:g} s {option} timeout "
                    f"({left:.0%} left, less than the {self.margin:.0%} margin): the platform may be slower"
                )
        figures = self.resources
        if figures.peak_bytes is not None and self.memory_declared:
            share = figures.peak_bytes / self.memory_declared
            if share > NEAR_MEMORY:
                peak, declared = _mib(figures.peak_bytes), _mib(self.memory_declared)
                found.append(
                    f"memory peak {peak} is {share:.0%} of the {declared} declared "
                    f"(more than {NEAR_MEMORY:.0%}): the platform may kill the model for memory "
                    f"({figures.peak_source()})"
                )
        if self.gpu_declared > 0:
            found.append(
                f"model.yaml declares {self.gpu_declared} GPU(s): the harness ran the model without a GPU, "
                "so its GPU use was not checked"
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        figures = self.resources
        average_cpu, cpu_source = figures.cpu_average(self.cpu_declared)
        percent = (
            round(100 * figures.peak_bytes / self.memory_declared, 1)
            if figures.peak_bytes is not None and self.memory_declared
            else None
        )
        return {
            "memory": {
                "declaredBytes": self.memory_declared,
                "peakBytes": figures.peak_bytes,
                "peakSource": figures.peak_source(),
                "atReadyBytes": figures.at_ready_bytes,
                "atReadySource": (
                    "not measured: no read of the engine's stats fell between ready and the first job"
                    if figures.at_ready_bytes is None
                    else "a sample between ready and the first job"
                ),
                "cgroupMaxBytes": figures.cgroup_max_bytes,
                "cgroupMaxSource": (
                    None
                    if figures.cgroup_max_bytes is None
                    else "the cgroup's high-water mark (memory_stats.max_usage), page cache included"
                ),
                "percentOfDeclared": percent,
                "samples": figures.samples,
            },
            "cpu": {
                "declared": self.cpu_declared,
                "averageUsed": None if average_cpu is None else round(average_cpu, 3),
                "averageSource": cpu_source,
                "onlineCpus": figures.online_cpus,
            },
            "gpu": {"declared": self.gpu_declared, "checked": False},
            "statusTimeout": {
                "seconds": self.status.timeout,
                "readySeconds": _rounded(self.status.seconds),
                "leftFraction": _rounded(self.status.left()),
            },
            "runTimeout": {
                "seconds": self.run.timeout,
                "slowestSeconds": _rounded(self.run.seconds),
                "leftFraction": _rounded(self.run.left()),
            },
            "margin": self.margin,
        }


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
