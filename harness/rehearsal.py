"""Platform rehearsal: what the platform's own load and run tests will measure, measured here first.

While the battery runs, a sampler reads the container's memory and CPU use from the
engine (its one-shot stats endpoint, about 20 ms a read); the figures are set against
what model.yaml declares, and the timings against the timeouts. What fails an image and
what is only a warning is written in docs/contract.md#rehearsal.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests

from .container import ModelContainer

SAMPLE_EVERY = 0.5  # seconds between two reads of the container's stats
DEFAULT_MARGIN = 0.5  # the share of a timeout that should be left: the platform's machines may be slower
TEXT_TYPES = ("text/plain", "text/csv", "text/markdown")


@dataclass
class ResourceFigures:
    peak_bytes: int | None = None  # the largest working set seen (usage less inactive file cache)
    at_ready_bytes: int | None = None
    cgroup_max_bytes: int | None = None  # the cgroup's own high-water mark, page cache included
    cpu_seconds: float | None = None  # CPU time used from the start to the last sample
    wall_seconds: float | None = None  # from the start to the last sample
    samples: int = 0


class ResourceSampler:
    """Reads the container's stats every SAMPLE_EVERY seconds on a thread of its own."""

    def __init__(
        self, container: ModelContainer, figures: ResourceFigures, every: float = SAMPLE_EVERY
    ) -> None:
        self._container = container
        self._every = every
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._began = time.monotonic()
        self.figures = figures  # shared by the samplers of a model that is started again

    def start(self) -> None:
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="psc-harness-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # Only this thread asks the engine: a stats read may wait for the engine's next
        # collection cycle (up to a second), which the checks must never wait for.
        while not self._stop.is_set():
            working = self.sample()
            if self._ready.is_set() and self.figures.at_ready_bytes is None and working is not None:
                self.figures.at_ready_bytes = working
            self._stop.wait(self._every)

    def sample(self) -> int | None:  # on the sampler's thread
        """Read the stats once; the working set now, or None when they cannot be read."""
        if self._container.container is None:
            return None
        try:
            stats = self._container.container.stats(stream=False, one_shot=True)
        except (docker.errors.APIError, requests.RequestException, ValueError):
            return None
        memory = stats.get("memory_stats") or {}
        usage = memory.get("usage")
        if usage is None:  # the container is gone, or not started
            return None
        detail = memory.get("stats") or {}
        working = int(usage) - int(detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0)
        figures = self.figures
        if self._stop.is_set():
            return None  # the model is being stopped: its way out is not what it uses
        figures.samples += 1
        figures.peak_bytes = max(figures.peak_bytes or 0, working)
        if memory.get("max_usage"):
            figures.cgroup_max_bytes = int(memory["max_usage"])
        cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        if cpu is not None:
            # From the container's start: the first read comes about as soon as it runs.
            figures.cpu_seconds = int(cpu) / 1e9
            figures.wall_seconds = time.monotonic() - self._began
        return working

    def mark_ready(self) -> None:
        """The next sample is the memory at ready (taken by the sampler, not by the caller)."""
        self._ready.set()

    def stop(self) -> None:
        """Stop sampling; a read under way ends on its own, its figures no longer counted."""
        self._stop.set()
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
        if self.gpu_declared > 0:
            found.append(
                f"model.yaml declares {self.gpu_declared} GPU(s): the harness ran the model without a GPU, "
                "so its GPU use was not checked"
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        figures = self.resources
        average_cpu = (
            figures.cpu_seconds / figures.wall_seconds
            if figures.cpu_seconds is not None and figures.wall_seconds
            else None
        )
        percent = (
            round(100 * figures.peak_bytes / self.memory_declared, 1)
            if figures.peak_bytes is not None and self.memory_declared
            else None
        )
        return {
            "memory": {
                "declaredBytes": self.memory_declared,
                "peakBytes": figures.peak_bytes,
                "atReadyBytes": figures.at_ready_bytes,
                "cgroupMaxBytes": figures.cgroup_max_bytes,
                "percentOfDeclared": percent,
                "samples": figures.samples,
            },
            "cpu": {
                "declared": self.cpu_declared,
                "averageUsed": None if average_cpu is None else round(average_cpu, 3),
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


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
