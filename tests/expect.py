"""What the harness's battery holds for the sample's test cases, and shared expectations."""

from __future__ import annotations

import re

from tests.harness_runs import Result
from tests.resources import DATA

EXAMPLES = sorted(p.name for p in (DATA / "examples").iterdir())
VALIDATION_ERRORS = sorted(p.name for p in (DATA / "validation-error").iterdir())
RUN_EXAMPLES = {f"run.example[{case}]" for case in EXAMPLES}
RUN_VALIDATION_ERRORS = {f"run.validation-error[{case}]" for case in VALIDATION_ERRORS}
ALL_CHECKS = {
    "image.model-yaml",
    "image.default-command",
    "image.port-env",
    "status.ready",
    "status.content-type",
    "status.schema",
    *RUN_EXAMPLES,
    *RUN_VALIDATION_ERRORS,
    "run.not-json-415",
    "run.wrong-type-400",
    "run.missing-input-400",
    "run.output-written",
    "route.unknown-404",
    "route.wrong-method-405",
    "shutdown.response",
    "shutdown.exit-code",
}
# Without --model-data: one item each for the example and validation-error cases, skipped.
CHECKS_WITHOUT_DATA = {
    *(c for c in ALL_CHECKS if not c.startswith(("run.example[", "run.validation-error["))),
    "run.example",
    "run.validation-error",
}
NEEDS_THE_MODEL = ALL_CHECKS - {"image.model-yaml", "image.default-command"}
# The one-case data set ({mini} in a run's arguments): a whole battery in fewer jobs.
MINI_EXAMPLE, MINI_VALIDATION_ERROR = "english", "empty"
CHECKS_MINI = {
    *(c for c in ALL_CHECKS if not c.startswith(("run.example[", "run.validation-error["))),
    f"run.example[{MINI_EXAMPLE}]",
    f"run.validation-error[{MINI_VALIDATION_ERROR}]",
}
RUN_JOBS_MINI = 1 + 1 + 3
RUN_JOBS = len(EXAMPLES) + len(VALIDATION_ERRORS) + 3  # the cases, wrong-type, missing-input, output-written
NOT_RUN = ("not-run",)  # a check that could not run says why; it never passes


def death_is_seen(checks: list[dict[str, str]], exit_code: int) -> None:
    """A model that died mid-battery: the check during which the exit was seen fails and says
    so (a dying server may also have cut the answer of the check before it: which one sees
    the exit depends on when it comes); every check after it did not run."""
    failed = [i for i, c in enumerate(checks) if c["outcome"] == "failed"]
    assert failed, checks
    seen = checks[failed[-1]]  # shutdown.exit-code if it died then
    assert re.search(rf"exit(ed with)? code {exit_code}", seen["message"]), seen
    later = checks[failed[-1] + 1 :]
    assert all(c["outcome"] in NOT_RUN and c["message"].startswith("not run:") for c in later), later


def no_traceback(result: Result) -> None:
    # At the start of a line: the harness's own. A model's, in its log tail, is indented.
    assert not re.search(r"^Traceback \(most recent call last\)", result.output, re.M), result
    assert "INTERNALERROR" not in result.output, result


def failure_block(stdout: str, head: str) -> str:
    """A failed check's message in the terminal: its first line up to the next unindented
    line that is not part of it."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith((" ", "rule: ", "container log (tail):")):
            break
        block.append(line)
    return "\n".join(block)
