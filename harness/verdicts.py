"""How a check ended and what an image's checks add up to, as the reports write them.

The values are the JSON report's words (schemas/report.schema.json): these are ``str``
enums, so they compare and serialise as those words.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class CheckOutcome(StrEnum):
    """One check's outcome, from better to worse."""

    PASSED = "passed"
    SKIPPED = "skipped"  # does not apply: the message says why
    NOT_RUN = "not-run"  # could not run: an earlier finding or an interruption
    FAILED = "failed"  # a finding about the image
    ERROR = "error"  # the image could not be evaluated

    @property
    def severity(self) -> int:
        return list(CheckOutcome).index(self)


class Verdict(StrEnum):
    """An image's verdict, from better to worse; a run's is its worst image's."""

    CONFORMANT = "conformant"
    INCOMPLETE = "incomplete"  # some check never ran to an outcome: never conformant
    NONCONFORMANT = "nonconformant"
    ERROR = "error"

    @property
    def severity(self) -> int:
        return list(Verdict).index(self)


def verdict_of(outcomes: Iterable[str]) -> Verdict:
    """The verdict of an image from its checks' outcomes (none at all: incomplete)."""
    seen = {CheckOutcome(outcome) for outcome in outcomes}
    if CheckOutcome.ERROR in seen:
        return Verdict.ERROR
    if CheckOutcome.FAILED in seen:
        return Verdict.NONCONFORMANT
    if CheckOutcome.NOT_RUN in seen or not seen:
        return Verdict.INCOMPLETE
    return Verdict.CONFORMANT


def worst(verdicts: Iterable[str]) -> Verdict:
    return max((Verdict(v) for v in verdicts), key=lambda v: v.severity, default=Verdict.ERROR)
