"""pytest entry point of the conformance harness (registered through ``pytest11``).

Kept light: options, their resolution and the public fixtures. The session's parts
(``session.py``) and the core modules are imported once images are actually given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from . import settings
from .options import EXIT_NOT_EVALUATED

if TYPE_CHECKING:
    from .jobs import JobResult
    from .server import ModelServer
    from .session import HarnessSession

__all__ = ["EXIT_NOT_EVALUATED"]


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.addoption(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hooks

    pluginmanager.add_hookspecs(hooks)


@pytest.hookimpl(tryfirst=True)  # before pytest-html reads --html
def pytest_configure(config: pytest.Config) -> None:
    password = None
    if hasattr(config, "workerinput") or config.getoption("registry_password_stdin", False):
        from .session import stdin_password

        password = stdin_password(config)
    resolved = settings.resolve(config, password)
    if not resolved.active:
        return
    from .session import activate  # the heavy part, only when there is an image to check

    activate(config, resolved)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and _state(config) is None:
        terminalreporter.write_line(
            "model conformance: no image given: add --model-image REF or --model-tar FILE "
            "(see pytest --help, under 'model container conformance')"
        )


def _state(config: pytest.Config) -> HarnessSession | None:
    if not config.pluginmanager.has_plugin("model-conformance"):
        return None
    from .session import STASH_KEY

    return config.stash.get(STASH_KEY, None)


# -- public fixtures -----------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = _state(metafunc.config)
    if state is not None and len(state.runs) > 1 and "model_server" in metafunc.fixturenames:
        metafunc.parametrize("model_server", list(state.runs), indirect=True, scope="session")


@pytest.fixture(scope="session")
def model_server(request: pytest.FixtureRequest) -> ModelServer:
    """The image under test, started once and ready (``harness.server.ModelServer``): its
    ``metadata``, ``address``, ``request(...)`` and ``run_job(...)``."""
    state = _state(request.config)
    if state is None:
        pytest.skip("no model image given (--model-image or --model-tar)")
    run = state.run_for(getattr(request, "param", None))
    run.prepare()  # harness errors become outcomes in one place (outcomes.py)
    run.require_ready()
    from .server import ModelServer

    return ModelServer(run)


@pytest.fixture
def model_job(model_server: ModelServer) -> Callable[..., JobResult]:
    """Run one job: ``model_job({"input.txt": b"..."})`` returns the /run exchange and the output files."""
    return model_server.run_job
