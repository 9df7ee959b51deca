from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.containers import TEST_LABEL


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(version="auto")
    yield client
    # Every container a test starts carries TEST_LABEL; none may outlive the suite.
    left = client.containers.list(all=True, filters={"label": TEST_LABEL})
    for container in left:
        container.remove(force=True)
    client.close()
    assert not left, f"containers left behind by the tests: {[c.name for c in left]}"
