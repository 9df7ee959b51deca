"""What the battery sends the ready model: jobs on input files, and single requests.

Each is cited as evidence of the check under way; each job's steps are recorded in the
platform's terms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import jobs
from .budget import Budget
from .declared import Declared
from .http import Exchange, ModelClient
from .lifecycle import ModelLife
from .observe import Observation, Step, timed
from .platform import RUN_STEPS
from .runtime import ModelProcess
from .transport import Answer, Transport

A = TypeVar("A", bound=Answer)


class Traffic:
    def __init__(self, life: ModelLife, budget: Budget, declared: Declared, observed: Observation) -> None:
        self.life = life
        self.budget = budget
        self.declared = declared
        self.observed = observed
        # Prestaged job directories, by their inputs, in the container they were staged in.
        self._staged: dict[object, list[jobs.JobDirs]] = {}
        self._staged_in: ModelProcess | None = None

    def run_job(
        self,
        inputs: Mapping[str, bytes | Path],
        *,
        name: str = "job",
        payload: dict[str, object] | None = None,
    ) -> jobs.JobResult:
        """POST /run on the given input files (name -> content or file); returns the evidence."""
        steps: list[Step] = []
        number = iter(RUN_STEPS)
        with timed(steps, *next(number)):
            container = self.life.require_ready()
        with timed(steps, *next(number)):
            staged = self._staged.get(_inputs_key(inputs)) if self._staged_in is container else None
            dirs = staged.pop() if staged else jobs.stage(container, inputs)
        job = {"type": "file", "input": dirs.input_dir, "output": dirs.output_dir, **(payload or {})}
        http = container.transport
        assert isinstance(http, ModelClient)  # jobs on files are the HTTP contract's
        self.life.busy()
        with timed(steps, *next(number)) as details:
            exchange = http.post_json("/run", job, timeout=self.budget.run_timeout)
            self._ran(exchange, details)
        metadata = self.declared.metadata
        caps = {k: v or 0 for k, v in metadata.output_max.items()} if metadata else {}
        result = jobs.JobResult(
            exchange,
            dirs.input_dir,
            dirs.output_dir,
            lambda: jobs.read_outputs(container, dirs.output_dir, caps),
            lambda: jobs.list_undeclared(container, dirs.output_dir, caps),
        )
        if exchange.status == 200 and exchange.answered:
            # Outputs are recorded after a success, as on the platform; an error's are read
            # only if asked for (through the engine, each read of an output costs it a mount).
            with timed(steps, *next(number)) as details:
                details["outputs"] = sorted(n for n, o in result.outputs.items() if o.exists())
            number_, name_, percentage = next(number)
            steps.append(Step(number_, name_, percentage, time.time()))
        self.observed.jobs.append(
            {"job": name, "httpStatus": exchange.status, "steps": [s.as_dict() for s in steps]}
        )
        return result

    def _ran(self, exchange: Answer, details: dict[str, Any]) -> None:
        """A job's call ended: the evidence of the check under way, the slowest run for the
        rehearsal, the step's figures, and a stats read after it."""
        self.life.ran()
        self.life.lifetime.cite(exchange)
        rehearsal = self.life.rehearsal
        if exchange.answered and rehearsal is not None:
            rehearsal.run.seconds = max(rehearsal.run.seconds or 0.0, exchange.seconds)
        details.update(httpStatus=exchange.status, outcome=exchange.outcome.value)

    def prestage(self, planned: Sequence[Mapping[str, Path]]) -> None:
        """Copy the inputs of the jobs the battery will make into the container at once.

        Each job still gets directories of its own, used once; a job that was not planned
        is staged when it comes.
        """
        if not planned or (self._staged_in is not None and self._staged_in is self.life.container):
            return
        container = self.life.require_ready()
        self._staged = {}
        self._staged_in = container
        for inputs, dirs in zip(planned, jobs.stage_many(container, planned), strict=True):
            self._staged.setdefault(_inputs_key(inputs), []).append(dirs)

    def call(self, name: str, send: Callable[[Transport, float], A]) -> A:
        """One exchange of another contract's own (a gRPC Run, say) with the ready model, over
        its transport within the run timeout: cited, and recorded in the platform's run steps."""
        steps: list[Step] = []
        number = iter(RUN_STEPS)
        with timed(steps, *next(number)):
            transport = self.life.require_ready().transport
        assert transport is not None
        self.life.busy()
        next(number)  # no files to fetch: the inputs travel in the request
        with timed(steps, *next(number)) as details:
            exchange = send(transport, self.budget.run_timeout)
            self._ran(exchange, details)
        self.observed.jobs.append(
            {"job": name, "httpStatus": exchange.status, "steps": [s.as_dict() for s in steps]}
        )
        return exchange

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Exchange:
        """One exchange with the ready model (default timeout: the run timeout), cited as the
        evidence of the check under way."""
        http = self.life.require_ready().transport
        assert isinstance(http, ModelClient)  # requests by method and path are the HTTP contract's
        self.life.busy()
        exchange = http.request(
            method, path, body=body, headers=headers, timeout=timeout or self.budget.run_timeout
        )
        self.life.lifetime.cite(exchange)
        return exchange


def _inputs_key(inputs: Mapping[str, bytes | Path]) -> object:
    """Jobs whose inputs are the same files share a key (content given as bytes never does)."""
    if not all(isinstance(value, Path) for value in inputs.values()):
        return object()
    return frozenset((name, str(value)) for name, value in inputs.items())
