"""Waiting for a started model to answer GET /status: one loop asking a few probes in turn.

Each probe has one concern: the /status polls (StatusProbe), the container's exit
(ExitProbe), a server that listens only on other ports (ElsewhereProbe), a published port
that cannot be reached (UnreachableProbe). The loop owns the deadline and the back-off
between polls. The probes read the container only through ``Watched``, so another runtime
is waited on by this same code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .errors import SetupError
from .http import Outcome
from .transport import Answer, Transport

POLL_START = 0.01  # seconds between /status polls, doubling up to POLL_CAP
POLL_CAP = 0.05
PORT_LOOK_EVERY = 1.0  # seconds between looks at what the container listens on, while refused
PORT_SURE_AFTER = 2.0  # listening only elsewhere for this long: it will not change

Clock = Callable[[], float]  # seconds, monotonic


@dataclass
class Readiness:
    ready: bool = False
    polls: int = 0
    seconds: float = 0.0  # from the container's start to the verdict
    first_accept_seconds: float | None = None  # first connection the server took (answered or dropped)
    first_answer_seconds: float | None = None  # first HTTP status line
    last: Answer | None = None
    exit_code: int | None = None  # set when the container exited while loading
    oom_killed: bool = False
    other_ports: tuple[int, ...] = ()  # set when the server listens elsewhere than PSC_MODEL_PORT

    def step_details(self, timeout: float) -> dict[str, object]:
        """The figures of the load step "Checking status endpoint", as the report gives them."""
        return {
            "polls": self.polls,
            "statusTimeoutSeconds": timeout,
            "firstAcceptSeconds": _rounded(self.first_accept_seconds),
            "firstAnswerSeconds": _rounded(self.first_answer_seconds),
            "readySeconds": _rounded(self.seconds) if self.ready else None,
        }

    def failure(
        self, model_port: int, timeout: float, exit_cause: Callable[[bool], str], status_call: str = "/status"
    ) -> str:
        """Why the model did not become ready, for the report's final load step and status.ready
        (``exit_cause``: what ended the model, to follow its exit code)."""
        if self.exit_code is not None:
            return (
                f"the container exited with code {self.exit_code} during start-up, "
                f"after {self.seconds:.1f} s{exit_cause(self.oom_killed)}"
            )
        if self.other_ports:
            where = ", ".join(map(str, self.other_ports))
            return f"nothing listens on PSC_MODEL_PORT={model_port}; the server listens on {where}"
        last = self.last.summary() if self.last else "no request could be sent"
        return f"{status_call} not 200 within {timeout:g} s ({self.polls} polls; last: {last})"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class PortReporter(Protocol):
    """What the engine says when the model's published port cannot be reached."""

    def unreachable_port(self, tried: str, why: str, published: str) -> SetupError: ...


class Watched(Protocol):
    """What the wait reads of a started model container, and nothing more."""

    @property
    def transport(self) -> Transport | None:
        """How the model is spoken to; None when its port was not published."""
        ...

    @property
    def model_port(self) -> int:
        """PSC_MODEL_PORT, where the server must listen inside the container."""
        ...

    @property
    def started_at(self) -> float | None:
        """time.monotonic() once the engine started it."""
        ...

    @property
    def published_at(self) -> str | None:
        """The host address:port as the engine published it."""
        ...

    @property
    def engine(self) -> PortReporter: ...

    def exit_code(self) -> int | None:
        """The exit code once the container stopped, else None; known without a request."""
        ...

    def oom_killed(self) -> bool:
        """Whether the engine killed the container for exceeding its memory."""
        ...

    def listening(self) -> dict[int, bool]:
        """Each TCP port listened on in the container, and whether beyond its loopback."""
        ...


def _not_connected(exchange: Answer | None) -> bool:
    """The connection itself failed (refused, timed out, unroutable): the server was not reached."""
    return exchange is not None and not exchange.connected


def _not_reached(seen: Readiness) -> bool:
    """No connection was ever taken, and the last one was not either."""
    return seen.first_accept_seconds is None and _not_connected(seen.last)


class StatusProbe:
    """Polls the status through the transport (HTTP: GET /status; gRPC: Status); records what
    the polls saw; says when ready."""

    def __init__(self, target: Watched, started_at: float, clock: Clock) -> None:
        self._target = target
        self._started_at = started_at
        self._clock = clock

    def poll(self, seen: Readiness, deadline: float) -> bool:
        """One poll, when there is a transport and time left: True once /status answered 200."""
        transport = self._target.transport
        now = self._clock()
        if transport is None or now >= deadline:
            return False
        # The first /status may block while the model loads: the read may take the rest.
        seen.last = transport.poll_status(timeout=max(deadline - now, 0.05))
        seen.polls += 1
        since_start = self._clock() - self._started_at
        if seen.first_accept_seconds is None and not _not_connected(seen.last):
            seen.first_accept_seconds = since_start
        if seen.first_answer_seconds is None and seen.last.status is not None:
            seen.first_answer_seconds = since_start
        if seen.last.status == 200 and seen.last.answered:  # the whole answer, in time
            seen.ready = True
            return True
        return False


class ExitProbe:
    """The container exited while loading: its exit code, and whether it was killed out of memory."""

    def __init__(self, target: Watched) -> None:
        self._target = target

    def check(self, seen: Readiness) -> bool:
        code = self._target.exit_code()
        if code is None:
            return False
        seen.exit_code = code
        seen.oom_killed = self._target.oom_killed()
        return True


class PortLook:
    """What the container listens on, looked at no more than every PORT_LOOK_EVERY, and only
    while /status is not answered: a look is a command run in the container, not free."""

    def __init__(self, target: Watched, clock: Clock) -> None:
        self._target = target
        self._clock = clock
        self._next = clock() + PORT_LOOK_EVERY

    def take(self, last: Answer | None) -> dict[int, bool] | None:
        """The listening ports when a look is due, else None."""
        refused = last is None or last.outcome is Outcome.REFUSED or last.status is None
        if not (refused and self._clock() >= self._next):
            return None
        self._next = self._clock() + PORT_LOOK_EVERY
        return self._target.listening()


class ElsewhereProbe:
    """The server listens, but only on ports other than PSC_MODEL_PORT, for PORT_SURE_AFTER:
    it ignores the variable and will not move, so waiting out the timeout tells nothing more."""

    def __init__(self, target: Watched, clock: Clock) -> None:
        self._target = target
        self._clock = clock
        self._since: float | None = None

    def check(self, seen: Readiness, listening: dict[int, bool]) -> bool:
        ports = set(listening)
        if ports and self._target.model_port not in ports:
            self._since = self._since or self._clock()
            if self._clock() - self._since >= PORT_SURE_AFTER:
                seen.other_ports = tuple(sorted(ports))
                return True
        else:
            self._since = None
        return False


class UnreachableProbe:
    """The published port is not reached for PORT_SURE_AFTER while nothing says the model is
    missing from it: the harness cannot speak to the image at all (engine.unreachable_port)."""

    def __init__(self, target: Watched, clock: Clock) -> None:
        self._target = target
        self._clock = clock
        self._since: float | None = None  # the port not reached while the model listens on it

    def saw_poll(self, seen: Readiness) -> None:
        """What the last poll says: reached, or not reached for the network's reasons."""
        if not _not_reached(seen):
            self._since = None
        elif seen.last is not None and seen.last.outcome is not Outcome.REFUSED:
            # Timed out or unroutable: the network's doing (a port nothing listens on is refused).
            self._since = self._since or self._clock()

    def saw_ports(self, seen: Readiness, listening: dict[int, bool]) -> None:
        """What a port look says: the model listens beyond its loopback, yet its port refuses."""
        if _not_reached(seen) and listening.get(self._target.model_port):
            self._since = self._since or self._clock()

    def check(self, seen: Readiness) -> None:
        """Raise the engine's SetupError once the port has not been reached for long enough."""
        if self._since is not None and self._clock() - self._since >= PORT_SURE_AFTER:
            transport = self._target.transport
            assert seen.last is not None and transport is not None
            raise self._target.engine.unreachable_port(
                transport.address, seen.last.detail, self._target.published_at or "?"
            )


def wait_ready(
    target: Watched,
    timeout: float,
    *,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Readiness:
    """Poll GET /status until 200, the timeout, or the container's exit, whichever is first.

    ``timeout`` counts from the container's start. Also ends when the server listens only on
    other ports (``other_ports``); raises the engine's SetupError when the published port
    cannot be reached.
    """
    started_at = target.started_at
    assert started_at is not None
    deadline = started_at + timeout
    seen = Readiness()
    interval = POLL_START
    status, exits = StatusProbe(target, started_at, clock), ExitProbe(target)
    look = PortLook(target, clock)
    elsewhere, unreachable = ElsewhereProbe(target, clock), UnreachableProbe(target, clock)
    while True:
        # In this order: an exit seen after a 200 does not undo it, nor a deadline an exit.
        if status.poll(seen, deadline) or exits.check(seen) or clock() >= deadline:
            break
        unreachable.saw_poll(seen)
        listening = look.take(seen.last)
        if listening is not None:
            if elsewhere.check(seen, listening):
                break
            unreachable.saw_ports(seen, listening)
        unreachable.check(seen)
        sleep(min(interval, max(deadline - clock(), 0)))
        interval = min(interval * 2, POLL_CAP)
    seen.seconds = clock() - started_at
    return seen
