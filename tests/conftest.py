from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import docker.errors
import pytest

from sample_models import build
from tests import engine
from tests.engine import EngineWatch
from tests.harness_api import owner_token
from tests.harness_runs import Context, Entry, HarnessRuns
from tests.resources import TEST_LABEL, Resources

DECLARED = pytest.StashKey[list[Entry]]()
RUNS = pytest.StashKey[HarnessRuns]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tests that read no harness run go first: they run while the harness runs are under way.
    items.sort(key=lambda item: "harness" in getattr(item, "fixturenames", ()))


def pytest_collection_finish(session: pytest.Session) -> None:
    """The harness runs that the selected tests read: started together on first use."""
    session.config.stash[DECLARED] = [
        entry for item in session.items for marker in item.iter_markers("harness") for entry in marker.args
    ]


@pytest.fixture(scope="session")
def session_token() -> str:
    """This test session's owner token: the value of TEST_LABEL on what it makes itself."""
    return owner_token(os.getpid())


@pytest.fixture(scope="session")
def docker_client(session_token: str) -> Iterator[docker.DockerClient]:
    client = engine.client(timeout=120)
    yield client
    # Containers the tests started themselves (not through the harness): none may outlive
    # the suite. Only this session's, found by the value of its label.
    left = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={session_token}"})
    for container in left:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    client.close()
    assert not left, f"containers left behind by the tests: {[c.name for c in left]}"


@pytest.fixture(scope="session")
def samples(resources: Resources) -> dict[str, str]:
    """Every sample image (name -> id), built once per session, a few at a time. A harness
    run does not wait for this: it builds just its own sample when it starts."""
    names = [s.name for s in build.SAMPLES if not s.on_demand]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(resources.sample, names))
    return {name: resources.sample_ids[name] for name in names}


@pytest.fixture(scope="session")
def engine_watch(docker_client: docker.DockerClient) -> Iterator[EngineWatch]:
    watch = EngineWatch(docker_client).start()
    yield watch
    watch.close()
    # A safety net: whatever container a harness run of this session left is removed here
    # (runs remove their own leftovers as they end, and the tests say so).
    for record in list(watch.containers.values()):
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(record.id, force=True, v=True)


@pytest.fixture(scope="session")
def resources(tmp_path_factory: pytest.TempPathFactory, session_token: str) -> Iterator[Resources]:
    made = Resources(tmp_path_factory.mktemp("resources"), session_token)
    yield made
    made.close()


@pytest.fixture(scope="session")
def harness(
    request: pytest.FixtureRequest,
    engine_watch: EngineWatch,
    resources: Resources,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HarnessRuns]:
    """``harness(RUN)``: the outcome of a harness run that the test declared with
    ``@pytest.mark.harness(RUN)``; each run is carried out once per session."""
    context = Context(engine_watch, resources, Path(tmp_path_factory.mktemp("runs")))
    runs = HarnessRuns(context, request.config.stash.get(DECLARED, []))
    request.config.stash[RUNS] = runs
    yield runs
    runs.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    runs = config.stash.get(RUNS, None)
    if runs is not None:
        for line in runs.summary():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def _harness_runs_under_way(request: pytest.FixtureRequest) -> None:
    """Start the declared harness runs with the session, so that they overlap everything else."""
    if request.config.stash.get(DECLARED, []):
        with contextlib.suppress(Exception):  # no engine: the docker tests say so themselves
            request.getfixturevalue("harness").start()
