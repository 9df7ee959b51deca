"""The battery as a registry: each check is one function, declared where it is written.

A contract's checks register on its ``Registry`` with ``@registry.check(...)``: the id,
the rule of the contract it enforces, its phase, whether its setup may start the model, and
the jobs it will send. Its docstring's first paragraph is the summary the reports and
README show. The battery of an image, the jobs to stage ahead and README's check table are
all derived from the registry.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cases import Case

if TYPE_CHECKING:
    from .context import CheckContext

Inputs = Mapping[str, Path]
# A check, or a per-case check (the case first): checks receive the context alone once
# the battery binds each case.
CheckFunc = Callable[..., None]
JobsFunc = Callable[..., Sequence[Inputs]]


class Phase(enum.StrEnum):
    """The phases of a battery, in the order they run."""

    IMAGE = "image"
    STATUS = "status"
    RUN = "run"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class Check:
    id: str
    rule: str  # the anchor of the rule in the contract's document
    summary: str
    phase: Phase
    starts_container: bool  # setup may start the model (never for /shutdown: it starts on demand)
    func: CheckFunc
    jobs: JobsFunc | None = None  # the inputs of the jobs it will send, staged ahead of the battery
    per_case: str | None = None  # a case kind: one check per case of that kind ("<id>[<case>]")
    strict_only: bool = False  # only with --strict-rehearsal

    def __call__(self, context: CheckContext) -> None:
        self.func(context)


def summary_of(func: Callable[..., Any]) -> str:
    """A docstring's first paragraph, on one line."""
    doc = inspect.getdoc(func) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


class Registry:
    """The checks of one contract, in the order they are declared (the order they run, but
    for the shutdown phase, which the session keeps last)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._checks: list[Check] = []

    def check(
        self,
        check_id: str,
        *,
        rule: str,
        phase: Phase,
        starts_container: bool = True,
        jobs: JobsFunc | None = None,
        per_case: str | None = None,
        strict_only: bool = False,
    ) -> Callable[[Callable[..., None]], Check]:
        """Declare the function below as a check (with ``per_case``: it takes the case first)."""

        def declare(func: Callable[..., None]) -> Check:
            if any(c.id == check_id for c in self._checks):
                raise ValueError(f"check {check_id} is declared twice")
            found = Check(
                check_id,
                rule,
                summary_of(func),
                phase,
                starts_container,
                func,
                jobs,
                per_case,
                strict_only,
            )
            self._checks.append(found)
            return found

        return declare

    @property
    def declared(self) -> tuple[Check, ...]:
        return tuple(self._checks)

    def battery(
        self,
        found: Sequence[Case] | None,
        *,
        strict: bool = False,
        without_cases: Callable[[str], CheckFunc],
    ) -> list[Check]:
        """Every check for one image, in order: a per-case check once for each case of its
        kind, or once (``without_cases``: it says why there are none)."""
        checks: list[Check] = []
        for check in self._checks:
            if check.strict_only and not strict:
                continue
            if check.per_case is None:
                checks.append(check)
                continue
            of_kind = [c for c in found or () if c.kind == check.per_case]
            if not of_kind:
                checks.append(replace(check, func=without_cases(check.per_case), jobs=None))
            for case in of_kind:
                jobs = partial(check.jobs, case) if check.jobs is not None else None
                checks.append(
                    replace(check, id=f"{check.id}[{case.name}]", func=partial(check.func, case), jobs=jobs)
                )
        return checks

    def describe(self) -> list[tuple[str, str, str]]:
        """(id, contract rule, what it checks) of every check, as README's table lists them."""
        return [
            (f"{c.id}[<case>]" if c.per_case else c.id, c.rule, c.summary)
            for c in self._checks
            if not c.strict_only
        ]


def planned_jobs(battery: Sequence[Check], context: CheckContext) -> list[Inputs]:
    """The inputs of every job the battery's checks will send, in one list."""
    return [inputs for check in battery if check.jobs is not None for inputs in check.jobs(context)]
