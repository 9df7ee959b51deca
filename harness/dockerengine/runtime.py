"""The Docker engine as the runtime (Podman too, through its Docker API).

The only place where the run meets the docker SDK: the engine chosen and reached, the image
brought in by its source, the model's container made, and both undone at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import docker
import docker.errors

from ..errors import SetupError
from ..observe import Observation
from ..runtime import Limits, ModelProcess, PreparedImage, ProgressLine, Speak
from . import engine, images, reaper
from .container import ModelContainer
from .sources import ImageSource


class DockerRuntime:
    def __init__(self, source: ImageSource, engine_host: str | None) -> None:
        self.source = source
        self.engine = engine.resolve(engine_host)
        self.client: docker.DockerClient | None = None

    @property
    def where(self) -> str:
        return self.engine.where

    def connect(self) -> str:
        self.client = self.engine.connect()
        try:
            return str(self.client.version().get("Version"))
        except Exception as exc:
            raise SetupError(f"cannot reach the Docker engine {self.where}: {images.reason(exc)}") from None

    def reap(self) -> list[str]:
        assert self.client is not None
        with contextlib.suppress(docker.errors.DockerException, OSError):
            return reaper.reap(self.client)
        return []

    def bring_in(self, observed: Observation, progress: ProgressLine | None) -> PreparedImage:
        assert self.client is not None
        return self.source.bring_in(self.client, observed, progress)

    def model(
        self, image: PreparedImage, labels: dict[str, str], limits: Limits, speak: Speak
    ) -> ModelContainer:
        """The model's container, not yet created (so that it is known, and removed, even if
        its creation is interrupted)."""
        assert self.client is not None
        return ModelContainer(
            self.client, image.image_id, labels=labels, limits=limits, engine=self.engine, speak=speak
        )

    def read_model_yaml(self, process: ModelProcess, image: PreparedImage) -> tuple[str, str] | None:
        assert isinstance(process, ModelContainer) and process.container is not None
        return images.read_model_yaml(process.container, image)

    def close(self) -> list[Callable[[], None]]:
        client, self.client = self.client, None
        if client is None:
            return []
        return [lambda: self.source.cleanup(client), client.close]
