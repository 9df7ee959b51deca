"""How a check can end other than by passing: a finding, no verdict at all, or not applying."""

from __future__ import annotations

CONTRACT = "docs/contract.md"


def rule_link(rule: str) -> str:
    """Where a rule of the contract is written: ``docs/contract.md#<rule>``."""
    return f"{CONTRACT}#{rule}"


class SetupError(Exception):
    """The image could not be evaluated (Docker unreachable, image not found, bad input...).

    Not a verdict on the image: reported as an error, never as a failed check.
    """


class CheckSkipped(Exception):
    """The check does not apply to this run (no model.yaml, no test cases, ...)."""


class NotRun(CheckSkipped):
    """The check could not run because of an earlier finding (the model never became ready...)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"not run: {why}")


class Nonconformance(AssertionError):
    """The image breaks the contract: a failed check with structured evidence."""

    def __init__(
        self,
        route: str,
        expected: str,
        actual: str,
        rule: str,
        *,
        log_tail: str | None = None,
    ) -> None:
        self.route = route
        self.expected = expected
        self.actual = actual
        self.rule = rule  # an anchor of docs/contract.md
        self.log_tail = log_tail
        super().__init__(self.describe())

    def describe(self, *, with_log: bool = True) -> str:
        indent = " " * (len(self.route) + 11)  # an actual of several lines (a diff) stays in its column
        lines = [
            f"{self.route}: expected {self.expected}",
            f"{' ' * len(self.route)}  actual   {self.actual}".replace("\n", "\n" + indent),
            f"rule: {rule_link(self.rule)}",
        ]
        if self.log_tail and with_log:
            lines += ["container log (tail):", *("  " + line for line in self.log_tail.splitlines())]
        return "\n".join(lines)
