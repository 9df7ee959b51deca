"""pytest entry point of the conformance harness (registered through ``pytest11``).

Kept light: options and fixtures only. The session machinery (``session.py``) and the
core modules are imported once images are actually given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import settings
from .options import EXIT_NOT_EVALUATED

if TYPE_CHECKING:
    from .run import ImageRun, JobResult

__all__ = ["EXIT_NOT_EVALUATED"]


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.addoption(parser)


@pytest.hookimpl(tryfirst=True)  # before pytest-html reads --html
def pytest_configure(config: pytest.Config) -> None:
    password = None
    if _wants_stdin(config):
        from .session import stdin_password

        password = stdin_password(config)
    resolved = settings.resolve(config, password)
    if not resolved.active:
        if resolved.options.model_data or resolved.options.model_yaml:
            message = "harness: no image given: add --model-image REF or --model-tar FILE"
            pytest.exit(message, EXIT_NOT_EVALUATED)
        return
    from .session import activate  # the heavy part, only when there is an image to check

    activate(config, resolved)


def _wants_stdin(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput") or bool(config.getoption("registry_password_stdin", False))


def _plugin(config: pytest.Config) -> Any:
    if not config.pluginmanager.has_plugin("model-conformance"):
        return None
    from .session import STASH_KEY

    return config.stash.get(STASH_KEY, None)


# -- public fixtures -----------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    plugin = _plugin(metafunc.config)
    if plugin is not None and len(plugin.runs) > 1 and "model_server" in metafunc.fixturenames:
        metafunc.parametrize("model_server", list(plugin.runs), indirect=True, scope="session")


@pytest.fixture(scope="session")
def model_server(request: pytest.FixtureRequest) -> ImageRun:
    """The image under test, started once and ready: its ``container.http``, ``metadata``, ``run_job``."""
    from .errors import CheckSkipped, SetupError

    plugin = _plugin(request.config)
    if plugin is None:
        pytest.skip("no model image given (--model-image or --model-tar)")
    run = plugin.run_for(getattr(request, "param", None))
    error: SetupError | None = None
    try:
        run.require_ready()
    except CheckSkipped as exc:
        pytest.skip(str(exc))
    except SetupError as exc:
        error = exc
    if error is not None:
        plugin.not_evaluated = True
        pytest.fail(f"harness: {error}", pytrace=False)
    return run  # type: ignore[no-any-return]


@pytest.fixture
def model_job(model_server: ImageRun) -> Callable[..., JobResult]:
    """Run one job: ``model_job({"input.txt": b"..."})`` returns the /run exchange and the output files."""

    def run_job(inputs: Mapping[str, bytes | Path], *, payload: dict[str, object] | None = None) -> JobResult:
        return model_server.run_job(inputs, name="author", payload=payload)

    return run_job
