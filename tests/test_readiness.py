"""Unit tests of the readiness wait (harness/readiness.py): each probe's decision and the
loop's deadline and back-off, on a fake container, transport and clock (no Docker)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from harness import readiness
from harness.errors import SetupError
from harness.http import Exchange, Outcome
from harness.readiness import (
    PORT_LOOK_EVERY,
    PORT_SURE_AFTER,
    ElsewhereProbe,
    ExitProbe,
    PortLook,
    Readiness,
    StatusProbe,
    UnreachableProbe,
)

START = 100.0  # the fake clock's time when the container started
MODEL_PORT = 40123


class Clock:
    """A monotonic clock that only moves when slept on or told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def exchange(
    outcome: Outcome, status: int | None = None, *, connected: bool = False, detail: str = ""
) -> Exchange:
    return Exchange(
        "GET", "/status", {}, b"", outcome=outcome, status=status, connected=connected, detail=detail
    )


def refused() -> Exchange:
    return exchange(Outcome.REFUSED, detail="connection refused")


def timed_out() -> Exchange:
    return exchange(Outcome.TIMED_OUT, detail="no connection within the timeout")


def dropped() -> Exchange:  # the connection was taken, then closed before any status line
    return exchange(Outcome.DROPPED, connected=True, detail="the connection closed before an answer")


def answered(status: int) -> Exchange:
    return exchange(Outcome.ANSWERED, status, connected=True)


class FakeTransport:
    """Answers the status polls from a script (its last answer repeats); each request takes ``takes`` s."""

    address = "127.0.0.1:41000"

    def __init__(self, clock: Clock, *answers: Exchange, takes: float = 0.0) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.takes = takes
        self.timeouts: list[float] = []

    def poll_status(self, *, timeout: float) -> Exchange:
        self.timeouts.append(timeout)
        self.clock.now += self.takes
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def post_json(self, path: str, payload: object, *, timeout: float) -> Exchange:
        raise AssertionError("the wait only polls /status")


class FakeEngine:
    def unreachable_port(self, tried: str, why: str, published: str) -> SetupError:
        return SetupError(f"cannot reach {tried} ({why}); published on {published}")


@dataclass
class FakeContainer:
    """What the wait reads of a container (readiness.Watched), and how often it looked."""

    transport: FakeTransport | None
    model_port: int = MODEL_PORT
    started_at: float | None = START
    published_at: str | None = "0.0.0.0:41000"
    engine: FakeEngine = field(default_factory=FakeEngine)
    exited: int | None = None
    oom: bool = False
    ports: dict[int, bool] = field(default_factory=dict)
    looks: int = 0
    oom_asked: int = 0

    def exit_code(self) -> int | None:
        return self.exited

    def oom_killed(self) -> bool:
        self.oom_asked += 1
        return self.oom

    def listening(self) -> dict[int, bool]:
        self.looks += 1
        return dict(self.ports)


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()


# -- StatusProbe ------------------------------------------------------------------------------


def test_status_probe_ready_on_a_whole_200(clock: Clock) -> None:
    transport = FakeTransport(clock, answered(200), takes=0.25)
    probe, seen = StatusProbe(FakeContainer(transport), START, clock), Readiness()
    clock.now = START + 1.0
    assert probe.poll(seen, deadline=START + 10)
    assert seen.ready and seen.polls == 1 and seen.last is transport.answers[0]
    # Counted from the container's start, once the answer came.
    assert seen.first_accept_seconds == seen.first_answer_seconds == 1.25
    assert transport.timeouts == [9.0]  # the first /status may take the rest of the timeout


def test_status_probe_records_first_accept_and_first_answer_apart(clock: Clock) -> None:
    transport = FakeTransport(clock, refused(), dropped(), answered(503), answered(200))
    probe, seen = StatusProbe(FakeContainer(transport), START, clock), Readiness()
    for moment, ready in ((1.0, False), (2.0, False), (3.0, False), (4.0, True)):
        clock.now = START + moment
        assert probe.poll(seen, deadline=START + 10) is ready
    assert seen.polls == 4
    assert seen.first_accept_seconds == 2.0  # the dropped connection was taken: the server was reached
    assert seen.first_answer_seconds == 3.0  # the 503's status line


def test_status_probe_not_ready_on_a_200_cut_short(clock: Clock) -> None:
    cut = exchange(Outcome.TIMED_OUT, 200, connected=True, detail="the answer was still arriving")
    seen = Readiness()
    assert not StatusProbe(FakeContainer(FakeTransport(clock, cut)), START, clock).poll(seen, START + 10)
    assert not seen.ready and seen.first_answer_seconds == 0.0


def test_status_probe_does_not_poll_without_transport_or_time(clock: Clock) -> None:
    seen = Readiness()
    assert not StatusProbe(FakeContainer(None), START, clock).poll(seen, START + 10)
    transport = FakeTransport(clock, answered(200))
    clock.now = START + 10
    assert not StatusProbe(FakeContainer(transport), START, clock).poll(seen, START + 10)
    assert seen.polls == 0 and transport.timeouts == []


def test_status_probe_asks_at_least_50_ms(clock: Clock) -> None:
    transport = FakeTransport(clock, refused())
    clock.now = START + 9.99
    StatusProbe(FakeContainer(transport), START, clock).poll(Readiness(), START + 10)
    assert transport.timeouts == [0.05]


# -- ExitProbe --------------------------------------------------------------------------------


def test_exit_probe_running() -> None:
    container, seen = FakeContainer(None), Readiness()
    assert not ExitProbe(container).check(seen)
    assert seen.exit_code is None and container.oom_asked == 0  # the engine is not asked


@pytest.mark.parametrize("oom", [False, True])
def test_exit_probe_exited(oom: bool) -> None:
    container, seen = FakeContainer(None, exited=137, oom=oom), Readiness()
    assert ExitProbe(container).check(seen)
    assert (seen.exit_code, seen.oom_killed) == (137, oom)


# -- PortLook ---------------------------------------------------------------------------------


def test_port_look_every_second_while_refused(clock: Clock) -> None:
    container = FakeContainer(None, ports={8080: True})
    look = PortLook(container, clock)
    assert look.take(None) is None  # not yet due
    clock.now += PORT_LOOK_EVERY
    assert look.take(refused()) == {8080: True}
    assert look.take(refused()) is None  # the next one a second later
    clock.now += PORT_LOOK_EVERY
    assert look.take(timed_out()) == {8080: True}  # no status line counts as refused
    clock.now += PORT_LOOK_EVERY
    assert look.take(answered(503)) is None  # an answer: the server is on its port
    assert container.looks == 2


# -- ElsewhereProbe ---------------------------------------------------------------------------


def test_elsewhere_probe_sure_after_two_seconds(clock: Clock) -> None:
    probe, seen = ElsewhereProbe(FakeContainer(None), clock), Readiness()
    assert not probe.check(seen, {8080: True, 80: False})
    clock.now += PORT_SURE_AFTER - 0.5
    assert not probe.check(seen, {8080: True, 80: False})
    clock.now += 0.5
    assert probe.check(seen, {8080: True, 80: False})
    assert seen.other_ports == (80, 8080)


@pytest.mark.parametrize("then", [{}, {MODEL_PORT: False, 8080: True}])
def test_elsewhere_probe_starts_over(clock: Clock, then: dict[int, bool]) -> None:
    """Nothing listening (yet), or listening on PSC_MODEL_PORT too: the count starts over."""
    probe, seen = ElsewhereProbe(FakeContainer(None), clock), Readiness()
    assert not probe.check(seen, {8080: True})
    clock.now += 1.5
    assert not probe.check(seen, then)
    clock.now += 1.5
    assert not probe.check(seen, {8080: True})  # 3 s since the first look, 0 since the last start
    clock.now += PORT_SURE_AFTER
    assert probe.check(seen, {8080: True}) and seen.other_ports == (8080,)


# -- UnreachableProbe -------------------------------------------------------------------------


def polled(last: Exchange, first_accept: float | None = None) -> Readiness:
    return Readiness(polls=1, last=last, first_accept_seconds=first_accept)


def test_unreachable_probe_raises_the_engines_error_after_two_seconds(clock: Clock) -> None:
    transport = FakeTransport(clock, timed_out())
    probe, seen = UnreachableProbe(FakeContainer(transport), clock), polled(timed_out())
    probe.saw_poll(seen)
    clock.now += PORT_SURE_AFTER - 0.1
    probe.saw_poll(seen)
    probe.check(seen)
    clock.now += 0.1
    with pytest.raises(SetupError) as raised:
        probe.check(seen)
    assert str(raised.value) == (
        "cannot reach 127.0.0.1:41000 (no connection within the timeout); published on 0.0.0.0:41000"
    )


def test_unreachable_probe_refused_alone_is_not_unreachable(clock: Clock) -> None:
    """A refused port is the model not listening yet: the status timeout judges that."""
    probe, seen = UnreachableProbe(FakeContainer(FakeTransport(clock, refused())), clock), polled(refused())
    probe.saw_poll(seen)
    probe.saw_ports(seen, {MODEL_PORT: False})  # listening on its loopback only: cannot be reached
    clock.now += 10 * PORT_SURE_AFTER
    probe.check(seen)


def test_unreachable_probe_refused_while_listening_beyond_loopback(clock: Clock) -> None:
    probe, seen = UnreachableProbe(FakeContainer(FakeTransport(clock, refused())), clock), polled(refused())
    probe.saw_poll(seen)
    probe.saw_ports(seen, {MODEL_PORT: True})
    clock.now += PORT_SURE_AFTER
    with pytest.raises(SetupError, match="connection refused"):
        probe.check(seen)


def test_unreachable_probe_forgets_once_reached(clock: Clock) -> None:
    probe = UnreachableProbe(FakeContainer(FakeTransport(clock, timed_out())), clock)
    probe.saw_poll(polled(timed_out()))
    clock.now += 1.5
    reached = polled(timed_out(), first_accept=1.0)  # a connection was taken once: the port leads somewhere
    probe.saw_poll(reached)
    clock.now += PORT_SURE_AFTER
    probe.check(reached)
    probe.saw_ports(reached, {MODEL_PORT: True})
    probe.check(reached)


# -- the loop ---------------------------------------------------------------------------------


def wait(container: FakeContainer, clock: Clock, timeout: float = 10.0) -> Readiness:
    return readiness.wait_ready(container, timeout, clock=clock, sleep=clock.sleep)


def test_wait_ends_at_the_deadline_with_the_back_off(clock: Clock) -> None:
    transport = FakeTransport(clock, refused())
    container = FakeContainer(transport)
    seen = wait(container, clock, timeout=1.5)
    assert not seen.ready and seen.exit_code is None and seen.other_ports == ()
    assert seen.seconds == pytest.approx(1.5)
    # 10 ms doubling to 50 ms, the last sleep cut to the deadline.
    assert clock.slept[:4] == pytest.approx([0.01, 0.02, 0.04, 0.05])
    assert set(clock.slept[4:-1]) == {0.05} and 0 < clock.slept[-1] <= 0.05
    assert seen.polls == len(clock.slept)  # no poll once the deadline passed
    assert transport.timeouts[0] == pytest.approx(1.5)
    assert container.looks == 1  # at 1 s: nothing listening


def test_wait_deadline_counts_from_the_start(clock: Clock) -> None:
    """The timeout runs from the container's start, not from the call: time already gone counts."""
    clock.now = START + 10.0
    seen = wait(FakeContainer(FakeTransport(clock, refused())), clock, timeout=10.0)
    assert seen.polls == 0 and clock.slept == [] and seen.seconds == 10.0


def test_wait_a_slow_poll_ends_the_wait_at_the_deadline(clock: Clock) -> None:
    seen = wait(FakeContainer(FakeTransport(clock, timed_out(), takes=10.0)), clock, timeout=10.0)
    assert seen.polls == 1 and clock.slept == [] and seen.seconds == 10.0


def test_wait_ready(clock: Clock) -> None:
    container = FakeContainer(FakeTransport(clock, refused(), answered(503), answered(200)))
    seen = wait(container, clock)
    assert seen.ready and seen.polls == 3
    assert seen.seconds == pytest.approx(0.03) and seen.first_answer_seconds == pytest.approx(0.01)


def test_wait_a_200_wins_over_an_exit_seen_with_it(clock: Clock) -> None:
    seen = wait(FakeContainer(FakeTransport(clock, answered(200)), exited=0), clock)
    assert seen.ready and seen.exit_code is None


def test_wait_exit(clock: Clock) -> None:
    container = FakeContainer(FakeTransport(clock, refused()), exited=137, oom=True)
    seen = wait(container, clock)
    assert not seen.ready and (seen.exit_code, seen.oom_killed) == (137, True)
    assert seen.polls == 1 and clock.slept == []


def test_wait_without_a_published_port_watches_the_exit(clock: Clock) -> None:
    seen = wait(FakeContainer(None, exited=3), clock)
    assert (seen.polls, seen.exit_code, seen.last) == (0, 3, None)


def test_wait_listening_elsewhere(clock: Clock) -> None:
    container = FakeContainer(FakeTransport(clock, refused()), ports={8080: True})
    seen = wait(container, clock, timeout=60.0)
    assert not seen.ready and seen.other_ports == (8080,)
    # Seen at the first look (1 s), sure at the third (3 s, each look up to a 50 ms poll late).
    assert container.looks == 3 and 3.0 <= seen.seconds < 3.0 + 3 * readiness.POLL_CAP


def test_wait_unreachable_port_raises(clock: Clock) -> None:
    container = FakeContainer(FakeTransport(clock, timed_out()))
    with pytest.raises(SetupError, match=r"cannot reach 127\.0\.0\.1:41000 \(no connection"):
        wait(container, clock, timeout=60.0)
    assert clock.now - START == pytest.approx(PORT_SURE_AFTER, abs=0.06)
