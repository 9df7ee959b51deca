from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from harness.run import LABEL
from tests.containers import TEST_LABEL

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(version="auto")
    yield client
    # Every container a test or the harness starts is labelled; none may outlive the suite.
    left = [
        *client.containers.list(all=True, filters={"label": TEST_LABEL}),
        *client.containers.list(all=True, filters={"label": LABEL}),
    ]
    for container in left:
        container.remove(force=True)
    client.close()
    assert not left, f"containers left behind by the tests: {[c.name for c in left]}"


@pytest.fixture
def no_harness_leftovers(docker_client: docker.DockerClient) -> Iterator[None]:
    """Fails the test if a harness run leaves a container behind."""
    yield
    left = docker_client.containers.list(all=True, filters={"label": LABEL})
    for container in left:
        container.remove(force=True)
    assert not left, f"the harness left containers behind: {[c.name for c in left]}"
