"""The battery as pytest items: one collector per image, one item per check, in order.

Node ids are ``<image label>::<check id>``, and are shown so wherever pytest runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from .battery import Check, Phase
from .cases import Case
from .errors import Nonconformance, SetupError
from .run import ImageRun


def battery_for(run: ImageRun) -> list[Check]:
    """The checks of one image; the same list on the controller and on every xdist worker."""
    found: list[Case] | None = None
    if run.options.model_data is not None:
        # A bad data directory is reported once the run prepares, as "not evaluated".
        with contextlib.suppress(SetupError):
            found = run.declared.discovered(run.options.model_data).cases
    contract = run.contract
    return contract.registry.battery(found, strict=run.options.strict, without_cases=contract.without_cases)


def keep_ids_as_given(config: pytest.Config, labels: list[str]) -> None:
    """Show the batteries' node ids as they are, wherever pytest put its rootdir.

    pytest prints node ids relative to the directory it was started in, taking their first
    part for a path under its rootdir; path options given with a space (``--model-tar
    x.tar``) move that rootdir, and ids would read ``../x.tar::status.ready``. An image
    label is no path: its ids are shown as given, every other id as pytest would.
    """
    shown_by_pytest = config.cwd_relative_nodeid
    ours = set(labels)

    def cwd_relative_nodeid(nodeid: Any) -> Any:  # a str, or pytest 9's NodeId
        return nodeid if str(nodeid).split("::", 1)[0] in ours else shown_by_pytest(nodeid)

    setattr(config, "cwd_relative_nodeid", cwd_relative_nodeid)  # noqa: B010 (mypy: a method)


class CheckItem(pytest.Item):
    def __init__(self, *, run: ImageRun, check: Check, battery: list[Check], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.check = check
        self.battery = battery  # the image's whole battery: the jobs it plans are staged at once
        self.evidence: list[Any] = []
        self.details: dict[str, Any] = {}

    def setup(self) -> None:
        __tracebackhide__ = True
        self.run.prepare()
        if self.check.starts_container:
            self.run.start()

    def runtest(self) -> None:
        __tracebackhide__ = True
        with self.run.checking(self.check, self.battery) as record:
            self.evidence = record.evidence
            self.details = record.details
            self.check(self.run.context)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, Nonconformance):
            return f"[{self.check.id}] {excinfo.value.describe()}"
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # Not the node id's tail: pytest would print the dots of a check id as "::".
        return Path(self.run.label), None, f"{self.check.id} ({self.run.label})"


class ImageBattery(pytest.Collector):
    def __init__(self, *, run: ImageRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run

    def collect(self) -> list[CheckItem]:
        battery = battery_for(self.run)
        return [
            CheckItem.from_parent(self, name=check.id, run=self.run, check=check, battery=battery)
            for check in battery
        ]


class Collection:
    """Adds each image's battery to the session, /shutdown checks last."""

    def __init__(self, runs: dict[str, ImageRun]) -> None:
        self.runs = runs

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        head: list[pytest.Item] = []
        tail: list[pytest.Item] = []
        for label, run in self.runs.items():
            battery = ImageBattery.from_parent(session, name=label, nodeid=label, run=run)
            collected = battery.collect()
            # Counted as collected, like any test pytest found itself.
            report = pytest.CollectReport(
                battery.nodeid, "passed", None, list[pytest.Item | pytest.Collector](collected)
            )
            config.hook.pytest_collectreport(report=report)
            for item in collected:
                (tail if item.check.phase is Phase.SHUTDOWN else head).append(item)
        # The author's own tests use the running model too: they go before the shutdown checks.
        items[:] = head + items + tail
