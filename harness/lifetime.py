"""Which check is under way, what it saw, and whether the model died during it: one place.

An exit nobody asked for is the finding of the check that sees it; a later check that
meets it again says "not run". Every check's exchanges are its evidence.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import Nonconformance, NotRun
from .http import Outcome
from .runtime import ModelProcess
from .transport import Answer

EXIT_SHOWS_WITHIN = 2.0  # seconds given a dropped connection's server to show its exit


@dataclass
class CheckRecord:
    """What one check saw: its exchanges, and when it began (for its log lines)."""

    check_id: str
    began: float  # time.time()
    evidence: list[Answer] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # extra fields of its report record


class Lifetime:
    """The checks of one model, in turn, and the model's unasked exit among them.

    ``container`` gives the model's current container (None before one is created);
    ``shutting_down`` whether /shutdown was sent (an exit then is asked for);
    ``out_of_memory`` phrases an out-of-memory kill against what was declared.
    """

    def __init__(
        self,
        container: Callable[[], ModelProcess | None],
        shutting_down: Callable[[], bool],
        out_of_memory: Callable[[], str],
    ) -> None:
        self._container = container
        self._shutting_down = shutting_down
        self.out_of_memory = out_of_memory
        self.current: CheckRecord | None = None
        self.died_during: str | None = None  # the check during which the model exited unasked
        self.unanswered_in: str | None = None  # the last check whose request was dropped or refused
        self.root_causes: dict[str, str] = {}  # a finding's reason -> the check that found it first

    @property
    def current_id(self) -> str | None:
        return self.current.check_id if self.current is not None else None

    @contextlib.contextmanager
    def checking(self, check_id: str) -> Iterator[CheckRecord]:
        """Run one check: its exchanges are its evidence; an exit of the model during it, its finding."""
        record = CheckRecord(check_id, time.time())
        self.current = record
        try:
            yield record
            self.require_alive()
        finally:
            self.current = None

    def cite(self, exchange: Answer | None) -> None:
        """Count an exchange as evidence of the check running now (also an earlier one it judges)."""
        if self.current is not None and exchange is not None and exchange not in self.current.evidence:
            self.current.evidence.append(exchange)
        if exchange is not None and exchange.answered:
            self.unanswered_in = None  # the model answered since: a later exit is news

    def require_alive(self) -> None:
        """An exit that nobody asked for is the finding of the check that sees it."""
        container = self._container()
        if container is None or not container.started or self._shutting_down():
            return
        if self.died_during is not None:
            return
        code = container.exit_code()
        if code is None:
            return
        if self.unanswered_in is not None and self.unanswered_in != self.current_id:
            # One root cause, one failure: the check left unanswered saw this exit first.
            self.died_during = self.unanswered_in
            raise NotRun(f"the model exited with code {code} during {self.died_during}, which failed")
        self.died_during = self.current_id or "a check"
        oom = container.oom_killed()
        raise self.finding(
            "the model process",
            "to keep running and serving until POST /shutdown",
            f"it exited with code {code}{self.exit_cause(oom)}",
            "lifetime",
        )

    def unanswered(self, exchange: Answer) -> tuple[str, str | None]:
        """What a request left unanswered tells of the model: a note for the finding's
        "actual", and the rule it breaks instead, if not the request's own."""
        container = self._container()
        if exchange.outcome not in (Outcome.DROPPED, Outcome.REFUSED) or container is None:
            return "", None
        # A dropped connection often means the server died: give the exit a moment to show.
        code = container.wait_exit(EXIT_SHOWS_WITHIN)
        if code is not None:
            self.died_during = self.current_id or "a check"
            cause = self.exit_cause(container.oom_killed())
            return f"; the container exited with code {code}{cause}", None
        self.unanswered_in = self.current_id
        if container.oom_since(self.current.began if self.current else 0.0):
            # A worker process killed for memory, its server still up: the platform fails this too.
            return f"; the engine killed a process of the model: {self.out_of_memory()}", "resources"
        return "", None

    def exit_cause(self, oom_killed: bool) -> str:
        """What ended the model, to follow its exit code: the engine's out-of-memory kill, or
        the line of its log that explains it (a traceback's last line), so that a failure's
        first lines name the cause."""
        if oom_killed:
            return f", killed by the engine: {self.out_of_memory()}"
        container = self._container()
        line = explaining_line(container.log_tail() if container is not None else "")
        return f": {line}" if line else ""

    def finding(self, route: str, expected: str, actual: str, rule: str) -> Nonconformance:
        return Nonconformance(route, expected, actual, rule, log_tail=self.log_tail())

    def same_root(self, reason: str) -> str:
        """One root cause, one explanation: later checks that meet it again point at the first."""
        current = self.current_id or ""
        first = self.root_causes.setdefault(reason, current)
        return reason if first == current else f"the same as {first}: {reason}"

    def log_tail(self) -> str:
        container = self._container()
        if container is None:
            return ""
        since = self.current.began if self.current is not None else None
        # The lines of this check's own time span first; the last lines of all when it wrote none.
        return (since is not None and container.log_tail(since=since)) or container.log_tail()


# A line that reads as an error's own: `Name: message` of an exception (a Python traceback's
# last line, Java's `Exception in thread ...`), a Go panic, or a line headed error/fatal.
_EXPLAINING = re.compile(
    r"^(?:[A-Za-z_][\w.$]*(?:Error|Exception|Exit|Interrupt)\b|Traceback\b|(?i:panic:|fatal\b|error\b))"
)
EXPLAINING_MAX = 200  # characters of a log line quoted in a failure's first line


def explaining_line(log_tail: str) -> str | None:
    """The line of a log tail that explains an exit: the last one that reads as an error's,
    else the last line that is not empty; at most EXPLAINING_MAX characters."""
    lines = [line.strip() for line in log_tail.splitlines()]
    lines = [line.removeprefix("[...]").strip() for line in lines if line]
    chosen = next((line for line in reversed(lines) if _EXPLAINING.match(line)), None)
    chosen = chosen or next((line for line in reversed(lines) if line), None)
    if chosen is None:
        return None
    chosen = "".join(c if c.isprintable() else " " for c in chosen)
    return chosen if len(chosen) <= EXPLAINING_MAX else chosen[: EXPLAINING_MAX - 3] + "..."
