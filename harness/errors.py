"""The two ways a check can go wrong: a verdict on the image, or no verdict at all."""

from __future__ import annotations


class SetupError(Exception):
    """The image could not be evaluated (Docker unreachable, image not found, bad input...).

    Not a verdict on the image: reported as an error, never as a failed check.
    """


class CheckSkipped(Exception):
    """The check does not apply to this run (no model.yaml, no test cases, ...)."""


class Nonconformance(AssertionError):
    """The image breaks the contract: a failed check with structured evidence."""

    def __init__(
        self,
        route: str,
        expected: str,
        actual: str,
        spec: str,
        *,
        log_tail: str | None = None,
    ) -> None:
        self.route = route
        self.expected = expected
        self.actual = actual
        self.spec = spec
        self.log_tail = log_tail
        super().__init__(self.describe())

    def describe(self, *, with_log: bool = True) -> str:
        lines = [
            f"{self.route}: expected {self.expected}",
            f"{' ' * len(self.route)}  actual   {self.actual}",
            f"see SPEC.md {self.spec}",
        ]
        if self.log_tail and with_log:
            lines += ["container log (tail):", *("  " + line for line in self.log_tail.splitlines())]
        return "\n".join(lines)
