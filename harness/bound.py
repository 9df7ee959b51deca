"""The per-image time bound: a battery that runs past it is stopped, and the run is incomplete.

Set before each check's call and cancelled after it, by the plugin's own hooks (only the
image's checks count, not its upload, nor another image's battery). When it fires, a
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
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        if not isinstance(item, CheckItem) or self._previous is None:
            return (yield)
        run = item.run
        bound = run.bound(self.run_checks.get(run.label, 0))
        left = bound - self.spent.get(run.label, 0.0)
        began = time.monotonic()
        self._checks += 1
        check = self._armed = self._checks
        self._timer = threading.Timer(
            max(left, 0.0), self._fire, (check, f"{run.label} ran past its bound of {bound:.0f} s")
        )
        self._timer.daemon = True
        self._in_check = True
        self._timer.start()
        try:
            result = yield
        finally:
            self._in_check = False
            self._cancel()
            self.spent[run.label] = self.spent.get(run.label, 0.0) + time.monotonic() - began
        if self._fired == check:  # its BoundExceeded was lost, or came as the check ended
            raise BoundExceeded(self.overrun or "the per-image time bound")
        return result

    def _cancel(self) -> None:
        with self._lock:
            self._armed = 0
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            # A firing under way has signalled before the lock was taken, or never will.
            if timer is not threading.current_thread():
                timer.join()

    def _fire(self, check: int, why: str) -> None:
        with self._lock:
            if self._armed != check:
                return  # cancelled: its check is over
            self._fired = check
            self.overrun = f"{why} and was stopped"
            self.on_overrun(self.overrun)
            if self._main is not None:
                signal.pthread_kill(self._main, SIGNAL)
