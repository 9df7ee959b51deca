"""The per-image time bound: a battery that runs past it is stopped, and the run is incomplete.

Set before each check's setup and call and cancelled after each, by the plugin's own hooks:
the image's preparation and checks count, not its upload (bounded by the engine's
progress), nor another image's battery. When it fires, a
watchdog thread sends the main thread a signal of the harness's own, whose handler raises
``BoundExceeded``: this works whatever the dispositions of SIGINT, which a shell ignores
in its background jobs. Every HTTP exchange has its own deadline; this is the net under them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import pytest

from .collect import CheckItem

SIGNAL = signal.SIGUSR1


class BoundExceeded(KeyboardInterrupt):
    """An image's battery ran past its bound: the run stops as after Ctrl-C."""


class TimeBound:
    def __init__(self, run_checks: dict[str, int], on_overrun: Callable[[str], None]) -> None:
        self.run_checks = run_checks  # label -> number of /run checks, which size the bound
        self.on_overrun = on_overrun
        self.spent: dict[str, float] = {}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()  # a firing and a cancel never interleave
        self._armed = 0  # the firing that may still signal (0: none), as numbered by _fired
        self._fired = 0  # the number of the last firing that signalled
        self._checks = 0
        self._in_check = False
        self._previous: Any = None
        self._main = threading.main_thread().ident
        self.overrun: str | None = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(SIGNAL, self._raise)

    def _raise(self, _signum: int, _frame: object) -> None:
        # Only in the check it was set for: a signal whose handler runs later (in the
        # cleanup, say) is not to interrupt anything. The check raises it itself if lost.
        if self._in_check:
            raise BoundExceeded(self.overrun or "the per-image time bound")

    def close(self) -> None:
        self._cancel()
        if self._previous is not None:
            signal.signal(SIGNAL, self._previous)
            self._previous = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        return (yield from self._bounded(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        return (yield from self._bounded(item))

    def _bounded(self, item: pytest.Item) -> Generator[None, None, None]:
        if not isinstance(item, CheckItem) or self._previous is None:
            return (yield)
        run = item.run
        began, uploaded = time.monotonic(), run.upload_seconds()

        def left() -> float:
            """What is left of the bound: the time spent uploading is not counted."""
            now_spent = time.monotonic() - began - (run.upload_seconds() - uploaded)
            return run.bound(self.run_checks.get(run.label, 0)) - self.spent.get(run.label, 0.0) - now_spent

        self._checks += 1
        check = self._armed = self._checks

        def why() -> str:
            return f"{run.label} ran past its bound of {run.bound(self.run_checks.get(run.label, 0)):.0f} s"

        self._timer = self._start_timer(check, left(), left, why, lambda: run.uploading)
        self._in_check = True
        try:
            result = yield
        finally:
            self._in_check = False
            self._cancel()
            spent = time.monotonic() - began - (run.upload_seconds() - uploaded)
            self.spent[run.label] = self.spent.get(run.label, 0.0) + spent
        if self._fired == check:  # its BoundExceeded was lost, or came as the check ended
            raise BoundExceeded(self.overrun or "the per-image time bound")
        return result

    def _start_timer(
        self,
        check: int,
        delay: float,
        left: Callable[[], float],
        why: Callable[[], str],
        uploading: Callable[[], bool],
    ) -> threading.Timer:
        timer = threading.Timer(max(delay, 0.0), self._fire, (check, left, why, uploading))
        timer.daemon = True
        timer.start()
        return timer

    def _cancel(self) -> None:
        with self._lock:
            self._armed = 0
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            # A firing under way has signalled before the lock was taken, or never will.
            if timer is not threading.current_thread():
                timer.join()

    def _fire(
        self, check: int, left: Callable[[], float], why: Callable[[], str], uploading: Callable[[], bool]
    ) -> None:
        with self._lock:
            if self._armed != check:
                return  # cancelled: its check is over
            if uploading() or left() > 0.01:
                # An upload under way is not counted: the bound waits for what it has left.
                delay = max(left(), 1.0) if uploading() else left()
                self._timer = self._start_timer(check, delay, left, why, uploading)
                return
            self._fired = check
            self.overrun = f"{why()} and was stopped"
            self.on_overrun(self.overrun)
            if self._main is not None:
                signal.pthread_kill(self._main, SIGNAL)
