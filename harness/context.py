"""What a check may read and do: the narrow view of one image's run a check receives.

A check reads the author's declarations and the effective timeouts, sends requests and jobs
to the ready model, and phrases its findings; it never holds the run itself, so the run's
parts can change without touching a check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import jobs
from .budget import Budget
from .cases import Case
from .declared import Declared
from .errors import Nonconformance
from .http import Exchange
from .lifecycle import ModelLife, ShutdownResult
from .metadata import ModelMetadata
from .observe import Observation
from .options import RunOptions
from .prepare import Preparation
from .readiness import Readiness
from .traffic import A, Traffic
from .transport import Answer, Transport


class CheckContext:
    def __init__(
        self,
        label: str,
        options: RunOptions,
        declared: Declared,
        budget: Budget,
        observed: Observation,
        prepared: Preparation,
        life: ModelLife,
        traffic: Traffic,
    ) -> None:
        self.label = label
        self.options = options
        self.declared = declared
        self.budget = budget
        self._observed = observed
        self._prepared = prepared
        self._life = life
        self._traffic = traffic

    # -- what the author declared, and what the image is --------------------------------

    @property
    def metadata(self) -> ModelMetadata | None:
        return self.declared.metadata

    @property
    def metadata_error(self) -> str | None:
        return self.declared.metadata_error

    @property
    def model_yaml_note(self) -> str | None:
        return self._observed.model_yaml_note

    @property
    def cases(self) -> list[Case]:
        return self.declared.cases

    @property
    def has_command(self) -> bool:
        return self._prepared.has_command

    def adopt_metadata(self, metadata: ModelMetadata) -> None:
        """Take the model's metadata from what it says of itself (an image without model.yaml
        whose Status answer holds it, as chassis builds them): the later checks use it."""
        self.declared.metadata = metadata
        self._observed.model_yaml_note = f"no model.yaml: the metadata is {metadata.source}"

    def warnings(self) -> list[str]:
        """The platform rehearsal's warnings so far."""
        return self._observed.all_warnings()

    # -- the model ------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        """Start the model if need be and wait for its /status (once for the battery)."""
        return self._life.wait_ready()

    def ready_status(self) -> Answer:
        """The /status exchange that found the model ready (a check that judges it cites it)."""
        self._life.require_ready()
        readiness = self._life.readiness
        assert readiness is not None and readiness.last is not None
        return readiness.last

    def not_ready_reason(self, readiness: Readiness) -> str:
        return self._life.not_ready_reason(readiness)

    @property
    def model_port(self) -> int:
        assert self._life.container is not None
        return self._life.container.model_port

    def run_job(
        self,
        inputs: Mapping[str, bytes | Path],
        *,
        name: str = "job",
        payload: dict[str, object] | None = None,
    ) -> jobs.JobResult:
        return self._traffic.run_job(inputs, name=name, payload=payload)

    def request(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Exchange:
        return self._traffic.request(method, path, body=body, headers=headers)

    def call(self, name: str, send: Callable[[Transport, float], A]) -> A:
        """One exchange of the contract's own transport with the ready model (within the run timeout)."""
        return self._traffic.call(name, send)

    def shut_down(self) -> ShutdownResult:
        return self._life.shut_down()

    # -- findings -------------------------------------------------------------------------

    def finding(self, route: str, expected: str, actual: str, rule: str) -> Nonconformance:
        """A nonconformance, with the log lines of this check's time span."""
        return self._life.lifetime.finding(route, expected, actual, rule)

    def same_root(self, reason: str) -> str:
        return self._life.lifetime.same_root(reason)

    def unanswered(self, exchange: Answer) -> tuple[str, str | None]:
        """What an unanswered request says of the model (its exit, a kill for memory)."""
        return self._life.lifetime.unanswered(exchange)

    @property
    def details(self) -> dict[str, Any]:
        """Extra fields of this check's record in the report."""
        current = self._life.lifetime.current
        return current.details if current is not None else {}
