"""The model's life in its container: created, started once, waited for, shut down.

One start serves the whole battery; a check that comes after /shutdown (pytest --ff, an
author's own test) gets a fresh container.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .budget import Budget
from .errors import NotRun, SetupError
from .labels import labels
from .lifetime import Lifetime
from .observe import Observation, Step, timed
from .platform import CHECK_STEP, FAILED, FINAL_STEP, LOAD_STEP, READY
from .prepare import Preparation
from .readiness import Readiness, wait_ready
from .rehearsal import Rehearsal, ResourceSampler, Timing
from .runtime import ModelProcess, Speak
from .transport import Answer


@dataclass
class ShutdownResult:
    exchange: Answer
    exit_code: int | None  # None: still running after the wait, then killed
    waited: float


class ModelLife:
    def __init__(
        self,
        prepared: Preparation,
        budget: Budget,
        observed: Observation,
        session_id: str,
        margin: float,
        speak: Speak,
        status_call: str = "/status",
    ) -> None:
        self.prepared = prepared
        self.budget = budget
        self.observed = observed
        self.session_id = session_id
        self.margin = margin
        self.speak = speak  # the contract's transport
        self.status_call = status_call  # its status call, as findings name it
        self.container: ModelProcess | None = None
        self.readiness: Readiness | None = None
        self.shutdown: ShutdownResult | None = None
        self.rehearsal: Rehearsal | None = None
        self.sampler: ResourceSampler | None = None
        self.lifetime = Lifetime(
            lambda: self.container, lambda: self.shutdown is not None, self.out_of_memory
        )

    def created(self) -> ModelProcess:
        """The model's container, created but not started, with the declared resources."""
        if self.container is None:
            runtime, image = self.prepared.runtime, self.prepared.image
            assert runtime is not None and image is not None
            container = runtime.model(image, labels(self.session_id), self.budget.limits, self.speak)
            self.container = container  # registered first: removed at close even if creating fails
            container.create()
        return self.container

    def start(self) -> ModelProcess:
        """Start the container once: one start serves the whole battery."""
        self.prepared.prepare(self.created)
        if not self.prepared.has_command:
            raise NotRun("the image has no default command (see image.default-command)")
        if self.shutdown is not None:
            return self.restart()  # a check runs after /shutdown (pytest --ff, -p randomly...)
        container = self.created()
        if container.started:
            return container
        number, name, percentage = LOAD_STEP
        with timed(
            self.observed.load_steps, number, name.format(name=self.prepared.model_name), percentage
        ) as details:
            try:
                container.start()
            except SetupError as exc:
                self.prepared.setup_error = exc  # one failed start is enough: the other checks do not run
                raise
            limits = container.limits
            details.update(
                modelPort=container.model_port, memoryBytes=limits.memory_bytes, cpus=limits.cpu_count
            )
            details.update(publishedAt=container.published_at, reachedAt=container.reached_at)
        if self.rehearsal is None:
            budget = self.budget
            self.rehearsal = Rehearsal(
                limits.memory_bytes,
                limits.cpu_count,
                budget.gpu_count,
                Timing(budget.status_timeout),
                Timing(budget.run_timeout),
                margin=self.margin,
            )
            self.observed.rehearsal = self.rehearsal
        self.sampler = ResourceSampler(container, self.rehearsal.resources)
        self.sampler.start()
        return container

    def restart(self) -> ModelProcess:
        """A fresh container, for checks that come after /shutdown (the author's own tests)."""
        self.remove()
        self.readiness = self.shutdown = None
        return self.start()

    def wait_ready(self) -> Readiness:
        if self.readiness is None:
            container = self.start()
            timeout = self.budget.status_timeout
            with timed(self.observed.load_steps, *CHECK_STEP) as details:
                try:
                    readiness = wait_ready(container, timeout)
                except SetupError as exc:  # its port cannot be reached: the image is not evaluated
                    self.prepared.setup_error = exc
                    raise
                details.update(readiness.step_details(timeout))
            final = Step(
                FINAL_STEP, READY if readiness.ready else FAILED, 100 if readiness.ready else 66, time.time()
            )
            if not readiness.ready:
                final.details["reason"] = self.not_ready_reason(readiness)
            else:
                assert self.sampler is not None and self.rehearsal is not None
                self.sampler.mark_ready()
                self.rehearsal.status.seconds = readiness.seconds
            self.observed.load_steps.append(final)
            self.readiness = readiness
        self.lifetime.cite(self.readiness.last)
        return self.readiness

    def not_ready_reason(self, readiness: Readiness) -> str:
        assert self.container is not None
        return readiness.failure(
            self.container.model_port, self.budget.status_timeout, self.lifetime.exit_cause
        )

    def require_ready(self) -> ModelProcess:
        if self.shutdown is not None:
            self.restart()
        readiness = self.wait_ready()
        if not readiness.ready:
            raise NotRun("the model never became ready (see status.ready)")
        if self.lifetime.died_during is not None:
            raise NotRun(f"the model exited unexpectedly during {self.lifetime.died_during}")
        self.lifetime.require_alive()
        assert self.container is not None
        return self.container

    def busy(self) -> None:
        """A request goes to the model: a stats read from now on is no longer its memory at ready."""
        if self.sampler is not None:
            self.sampler.mark_busy()

    def ran(self) -> None:
        """A /run exchange ended: the sampler reads after it (ResourceSampler.after_run)."""
        if self.sampler is not None:
            self.sampler.after_run()

    def out_of_memory(self) -> str:
        """An out-of-memory kill, against the declared memory, with the peak seen before it."""
        declared = self.budget.limits.memory_bytes
        figures = self.rehearsal.resources if self.rehearsal else None
        peak = (
            f"; peak seen before: {figures.peak_bytes / 2**20:.0f} MiB"
            if figures and figures.peak_bytes
            else ""
        )
        return f"the model ran out of its declared memory ({declared / 2**20:.0f} MiB{peak})"

    def shut_down(self) -> ShutdownResult:
        if self.shutdown is None:
            container = self.require_ready()
            assert container.transport is not None
            if self.sampler is not None:
                # The figures of the running model, not of its way out; the high-water mark
                # read after the last /run (started then, often done by now) holds a /run too
                # short for any sample.
                self.sampler.final()
            # One deadline covers the answer and the exit.
            timeout = self.budget.shutdown_timeout
            began = time.monotonic()
            exchange = container.transport.shutdown(timeout=timeout)
            left = timeout - (time.monotonic() - began)
            code = container.wait_exit(max(left, 0.1))
            if code is None:
                container.kill()
            self.shutdown = ShutdownResult(exchange, code, time.monotonic() - began)
        self.lifetime.cite(self.shutdown.exchange)
        return self.shutdown

    def stop_sampling(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def remove(self) -> None:
        """Remove the container (its files and anonymous volumes with it)."""
        container, self.container = self.container, None
        if container is not None:
            container.remove()
