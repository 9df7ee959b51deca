"""The observation record: what the harness saw of one image, as it happened.

The core fills it (load steps, /run jobs, problems); the report is built from its plain
snapshot alone, never from the runner's internals, so that it can travel from an xdist
worker to the controller.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .platform import FAILED, READY


@dataclass
class Step:
    """One step as the platform reports it, with what the harness observed during it."""

    number: int
    name: str
    percentage: int
    started_at: float  # time.time()
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.number,
            "stepName": self.name,
            "percentage": self.percentage,
            "startedAt": datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="milliseconds"),
            "durationSeconds": round(self.seconds, 4),
            **({"details": self.details} if self.details else {}),
        }


@contextlib.contextmanager
def timed(steps: list[Step], number: int, name: str, percentage: int) -> Iterator[dict[str, Any]]:
    """Record a step around a block; a failure is noted in the step and passed on."""
    step = Step(number, name, percentage, time.time())
    steps.append(step)
    began = time.monotonic()
    try:
        yield step.details
    except Exception as exc:
        step.details["error"] = str(exc)
        raise
    finally:
        step.seconds = time.monotonic() - began


@dataclass
class Observation:
    """Everything the report says about one image, filled in as the run goes."""

    label: str
    reference: str  # as the user named it: a reference or a TAR path
    source: str  # a SourceKind, as the report names it
    registry_fields: dict[str, str] = field(default_factory=dict)
    image_id: str | None = None
    digest: str | None = None
    image_bytes: int | None = None  # the image's size in the engine
    upload_bytes: int | None = None  # what was uploaded: the TAR's or the pulled layers' size
    model_yaml: str | None = None
    model_yaml_note: str = ""
    engine_version: str | None = None
    load_steps: list[Step] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(
        default_factory=list
    )  # never change the verdict (but with --strict-rehearsal)
    rehearsal: Any = None  # a rehearsal.Rehearsal, once the container started
    reaped: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def all_warnings(self) -> list[str]:
        return [*self.warnings, *(self.rehearsal.warnings() if self.rehearsal is not None else [])]

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-ready data: the image's part of the report, without its checks."""
        upload = next((s for s in self.load_steps if s.number == 1), None)
        load = [s for s in self.load_steps if s.number > 1]
        final = load[-1] if load else None
        problems = list(self.problems)
        for step in self.load_steps:
            for key in ("error", "reason"):
                if key in step.details and str(step.details[key]) not in problems:
                    problems.append(str(step.details[key]))
        if final is not None and final.name in (READY, FAILED):
            load_status = final.name
        elif problems:
            load_status = FAILED
        else:
            load_status = final.name if final else "Not started"
        container_image: dict[str, Any] = {
            "uploadStatus": next(
                (s.name for s in reversed(self.load_steps) if s.name not in (READY, FAILED)),
                upload.name if upload else "Not started",
            ),
            "loadStatus": load_status,
            "uploadPercentage": int(upload.details.get("uploadPercentage", 0)) if upload else 0,
            "loadPercentage": final.percentage if final else 0,
            "containerImageSize": self.image_bytes or self.upload_bytes or 0,
            **self.registry_fields,
        }
        if problems:
            container_image["technicalInformation"] = "; ".join(problems)
        from . import __version__

        return {
            "label": self.label,
            "containerImage": container_image,
            "loadSteps": [step.as_dict() for step in self.load_steps],
            "runSteps": list(self.jobs),
            "warnings": self.all_warnings(),
            "rehearsal": self.rehearsal.as_dict() if self.rehearsal is not None else None,
            "image": {
                "reference": self.reference,
                "source": self.source,
                "id": self.image_id,
                "digest": self.digest,
                "sizeBytes": self.image_bytes,
                "modelYaml": self.model_yaml,
                "modelYamlNote": self.model_yaml_note,
                "harnessVersion": __version__,
                "engineVersion": self.engine_version,
            },
        }
