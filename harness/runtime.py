"""The runtime seam: what the harness needs of where a model runs.

The run, its checks and the rehearsal speak to a model's runtime only through these
protocols. The Docker engine (and Podman through its Docker API) is one implementation
(``harness/dockerengine/``, the only part of the harness that imports the docker SDK);
another runtime is another implementation of the same two protocols.
"""

from __future__ import annotations

import contextlib
import enum
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from .observe import Observation
from .readiness import Watched
from .transport import Transport

Speak = Callable[[str, int], Transport]  # a contract's transport to a host and port


@dataclass
class Progress:
    """Bytes moved so far, out of what is known of the total."""

    done: int = 0
    total: int = 0
    finished: bool = False

    @property
    def percentage(self) -> float:
        if self.finished:
            return 100.0
        return min(100.0 * self.done / self.total, 99.9) if self.total else 0.0

    def line(self, what: str) -> str:
        mib = 2**20
        return f"{what}: {self.percentage:5.1f}% ({self.done / mib:.0f}/{self.total / mib:.0f} MiB)"


ProgressLine = Callable[[str, Progress], None]  # what is moved ("loading x.tar"), how far

DEFAULT_MEMORY = 2**30  # without a model.yaml: 1 GiB, 1 CPU (docs/contract.md#resources)
DEFAULT_CPUS = 1.0


class SourceKind(enum.StrEnum):
    """Where an image came from, as the report names it."""

    TAG = "tag"  # in the engine already
    TAR = "tar"  # loaded from a `docker save` archive
    REGISTRY = "registry"  # pulled


@dataclass(frozen=True)
class Limits:
    """The resources a model is given: its declared memory and CPUs."""

    memory_bytes: int = DEFAULT_MEMORY
    cpu_count: float = DEFAULT_CPUS


@dataclass
class PreparedImage:
    """An image brought into the runtime, as the run and the report know it."""

    ref: str  # what the user named: a tag or a TAR path
    source: SourceKind
    image_id: str
    tags: tuple[str, ...]
    size: int
    config: dict[str, Any]
    digest: str | None = None

    @property
    def working_dir(self) -> str:
        return str(self.config.get("WorkingDir") or "/")

    @property
    def has_command(self) -> bool:
        return bool(self.config.get("Cmd") or self.config.get("Entrypoint"))


class ModelProcess(Watched, Protocol):
    """One model, created with its limits, then started once, watched and removed (what the
    readiness wait reads of it is ``Watched``: its transport, port, exit)."""

    limits: Limits

    @property
    def container_id(self) -> str | None: ...  # the runtime's own id of it, once created
    @property
    def engine_started_at(self) -> str | None: ...  # when it started, in the runtime's clock
    @property
    def started(self) -> bool: ...
    @property
    def reached_at(self) -> str | None: ...
    def create(self) -> object: ...
    def set_limits(self, limits: Limits) -> None: ...
    def start(self) -> None: ...
    def exit_code(self) -> int | None: ...  # known at once, without asking the runtime
    def wait_exit(self, timeout: float) -> int | None: ...
    def kill(self) -> None: ...
    def remove(self) -> None: ...
    def put_archive(self, path: str, archive: bytes | IO[bytes] | Iterable[bytes]) -> None: ...
    def read_archive(self, path: str) -> contextlib.AbstractContextManager[tarfile.TarFile | None]: ...
    # A regular file read without the runtime's archive (size, stream), or None: then read_archive.
    def read_file(self, path: str) -> contextlib.AbstractContextManager[tuple[int, IO[bytes]] | None]: ...
    def log_tail(self, lines: int = ..., since: float | None = None) -> str: ...
    def stats(self, timeout: float) -> dict[str, Any] | None: ...
    def oom_since(self, since: float) -> bool: ...


class Runtime(Protocol):
    """Where models run: reached once per image, the image brought in, its models created."""

    @property
    def where(self) -> str: ...  # for messages: the engine and how it was chosen

    def connect(self) -> str: ...  # the runtime's version; a SetupError when it cannot be reached
    def reap(self) -> list[str]: ...  # what runs killed outright left behind (never a live run's)
    def bring_in(self, observed: Observation, progress: ProgressLine | None) -> PreparedImage: ...
    def model(
        self, image: PreparedImage, labels: dict[str, str], limits: Limits, speak: Speak
    ) -> ModelProcess: ...
    def read_model_yaml(self, process: ModelProcess, image: PreparedImage) -> tuple[str, str] | None: ...
    def close(self) -> list[Callable[[], None]]: ...  # the steps that undo bring_in and connect
