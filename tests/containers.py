"""Plain docker SDK + requests helpers for checking the sample images without the plugin."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import requests
from docker.models.containers import Container

from tests.resources import TEST_LABEL


def random_model_port() -> int:
    return random.randint(20000, 60000)  # never 80 or 8080: the port must really come from the env


@dataclass
class Running:
    container: Container
    model_port: int
    url: str | None  # None when Docker published no port (the container already exited)

    def get(self, path: str, **kwargs: object) -> requests.Response:
        assert self.url, "the container published no port"
        return requests.get(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> requests.Response:
        assert self.url, "the container published no port"
        return requests.post(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self, timeout: float = 20.0) -> requests.Response:
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = self.get("/status")
                if response.status_code == 200:
                    return response
            except requests.ConnectionError:
                pass
            self.container.reload()
            assert self.container.status in ("created", "running"), self.container.logs().decode()
            assert time.monotonic() < deadline, f"/status not 200 within {timeout} s"
            time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return int(self.container.wait(timeout=timeout)["StatusCode"])
        except requests.exceptions.ConnectionError:  # the docker SDK's read timeout
            return None


@contextmanager
def started(
    client: docker.DockerClient,
    image: str,
    *,
    owner: str,
    mounts: dict[Path, str] | None = None,
    also_publish: tuple[int, ...] = (),
) -> Iterator[Running]:
    port = random_model_port()
    ports: dict[str, tuple[str, None]] = {f"{p}/tcp": ("127.0.0.1", None) for p in (port, *also_publish)}
    container = client.containers.run(
        image,
        detach=True,
        environment={"PSC_MODEL_PORT": str(port)},
        ports=ports,
        labels={TEST_LABEL: owner},  # this session's: removed by it alone
        volumes={str(host): {"bind": inside, "mode": "rw"} for host, inside in (mounts or {}).items()},
    )
    try:
        container.reload()
        bindings = container.ports.get(f"{port}/tcp")
        url = f"http://127.0.0.1:{bindings[0]['HostPort']}" if bindings else None
        yield Running(container, port, url)
    finally:
        container.remove(force=True)


def host_port(running: Running, container_port: int) -> str:
    running.container.reload()
    return str(running.container.ports[f"{container_port}/tcp"][0]["HostPort"])
