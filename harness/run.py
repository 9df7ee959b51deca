"""The conformance run of one image: prepare it once, start it once, run every check on it.

Knows nothing of pytest: a script can drive an ``ImageRun`` directly. It is a composition
of parts, each owning one thing:

- ``Preparation`` (prepare.py): the engine connection and the image brought in, once;
- ``Budget`` (budget.py): the effective timeouts and resources;
- ``ModelLife`` (lifecycle.py): the container started, waited for, shut down;
- ``Lifetime`` (lifetime.py): the check under way, its evidence, the model's unasked exit;
- ``Traffic`` (traffic.py): the jobs and requests sent to the ready model.

What it sees goes into its ``Observation``; each check receives a ``CheckContext``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence

from .battery import Check, Phase, planned_jobs
from .budget import Budget
from .context import CheckContext
from .contracts import contract_for
from .declared import Declared
from .dockerengine import ImageSource
from .lifecycle import ModelLife
from .lifetime import CheckRecord
from .metadata import ModelMetadata
from .observe import Observation
from .options import RunOptions
from .prepare import Preparation
from .runtime import ModelProcess, ProgressLine
from .traffic import Traffic


class ImageRun:
    def __init__(
        self,
        source: ImageSource,
        options: RunOptions,
        *,
        session_id: str | None = None,
        progress: ProgressLine | None = None,
    ) -> None:
        self.source = source
        self.options = options
        self.observed = Observation(source.label, source.reference, source.source.value)
        self.declared = Declared(self.observed)
        self.budget = Budget(options, self.declared)
        self.prepared = Preparation(source, options, self.declared, self.budget, self.observed, progress)
        self.contract = contract_for(options.protocol)
        self.life = ModelLife(
            self.prepared,
            self.budget,
            self.observed,
            session_id or uuid.uuid4().hex[:12],
            options.margin,
            self.contract.speak,
            self.contract.status_call,
        )
        self.traffic = Traffic(self.life, self.budget, self.declared, self.observed)
        self.context = CheckContext(
            source.label,
            options,
            self.declared,
            self.budget,
            self.observed,
            self.prepared,
            self.life,
            self.traffic,
        )
        self.cleanup_problems: list[str] = []

    @property
    def label(self) -> str:
        return self.source.label

    @property
    def metadata(self) -> ModelMetadata | None:
        return self.declared.metadata

    # -- what the session asks of it --------------------------------------------------------

    def prepare(self) -> None:
        self.prepared.prepare(self.life.created)

    def start(self) -> ModelProcess:
        return self.life.start()

    def require_ready(self) -> ModelProcess:
        return self.life.require_ready()

    @property
    def uploading(self) -> bool:
        return self.prepared.uploading

    def upload_seconds(self) -> float:
        return self.prepared.upload_seconds()

    def bound(self, run_checks: int) -> float:
        return self.budget.bound(run_checks)

    @contextlib.contextmanager
    def checking(self, check: Check, battery: Sequence[Check] = ()) -> Iterator[CheckRecord]:
        """Run one check on this image; the first /run check stages the battery's inputs."""
        with self.life.lifetime.checking(check.id) as record:
            if check.phase is Phase.RUN and self.metadata is not None and battery:
                self.traffic.prestage(planned_jobs(battery, self.context))  # once, for the whole battery
            yield record

    def close(self) -> None:
        """Remove everything this run created: the container, and the image it loaded or pulled."""
        # Each step on its own: one that fails must not leave the others undone.
        steps: list[Callable[[], None]] = [self.life.stop_sampling, self.life.remove, *self.prepared.close()]
        problems = []
        for step in steps:
            try:
                step()
            except Exception as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
        self.cleanup_problems = problems
