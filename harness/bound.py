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
        self._previous: Any = None
        self._main = threading.main_thread().ident
        self.overrun: str | None = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(SIGNAL, self._raise)

    def _raise(self, _signum: int, _frame: object) -> None:
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
        self._timer = threading.Timer(
            max(left, 0.0), self._fire, (f"{run.label} ran past its bound of {bound:.0f} s",)
        )
        self._timer.daemon = True
        self._timer.start()
        try:
            return (yield)
        finally:
            self._cancel()
            self.spent[run.label] = self.spent.get(run.label, 0.0) + time.monotonic() - began

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, why: str) -> None:
        self.overrun = f"{why} and was stopped"
        self.on_overrun(self.overrun)
        if self._main is not None:
            signal.pthread_kill(self._main, SIGNAL)
