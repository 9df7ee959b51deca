"""One model container: created with its limits, started safely, watched, stopped and removed.

Its files and log travel through the engine's bounded calls (calls.py).
"""

from __future__ import annotations

import contextlib
import random
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

import docker
import docker.errors
import requests
from docker.models.containers import Container

from ..errors import SetupError
from ..http import ModelClient
from ..runtime import Limits
from ..transport import Transport
from . import calls
from .engine import Engine, resolve
from .localfs import ContainerRoot, cgroup_stats

EXIT_WAIT = 600.0  # seconds of one wait request for the container's exit, asked again after
PIDS_LIMIT = 1024  # always: a fork bomb stays inside the container


def random_model_port() -> int:
    # Never 80 or 8080: an image that ignores PSC_MODEL_PORT must not pass by luck.
    return random.randint(20000, 59999)


def engine_options(limits: Limits) -> dict[str, int]:
    return {
        # No swap beyond the declared memory, as on the platform.
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        # The same as --cpus, in the form that can also be updated before the start.
        "cpu_period": 100_000,
        "cpu_quota": int(limits.cpu_count * 100_000),
    }


class ModelContainer:
    """Use as a context manager: whatever happens, the container is removed on exit."""

    def __init__(
        self,
        client: docker.DockerClient,
        image_id: str,
        *,
        labels: dict[str, str],
        limits: Limits | None = None,
        name_prefix: str = "psc-model",
        engine: Engine | None = None,
        speak: Callable[[str, int], Transport] = ModelClient,
    ) -> None:
        self._client = client
        self.speak = speak  # the contract's transport, given where the model's port is reached
        self.engine = engine or resolve()  # where the port is published and reached
        self.image_id = image_id
        self.labels = labels
        self.limits = limits or Limits()
        self.model_port = random_model_port()
        self.name = f"{name_prefix}-{self.model_port}-{random.randrange(16**6):06x}"
        self.container: Container | None = None
        self._transport: Transport | None = None  # made by ``speak`` once the port is published
        self.started_at: float | None = None  # time.monotonic() once the engine started it
        self._exit: ExitWatch | None = None  # from the start on
        self._create_asked = False
        self.published_at: str | None = None  # host address:port, as the engine published it
        self._root: ContainerRoot | None = None  # its root from the host (a local engine), once opened
        self._root_tried = False

    def __enter__(self) -> ModelContainer:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def create(self) -> Container:
        """Create the container (not started): its files can be read before it runs."""
        if self.container is None:
            # Interrupted while the engine creates it, the harness would not learn its id:
            # from here on it is removed by its name.
            self._create_asked = True
            try:
                self.container = self._client.containers.create(
                    self.image_id,
                    name=self.name,
                    environment={"PSC_MODEL_PORT": str(self.model_port)},
                    ports=self.engine.port_bindings(self.model_port),
                    labels=self.labels,
                    privileged=False,
                    pids_limit=PIDS_LIMIT,
                    **engine_options(self.limits),
                )
            except docker.errors.APIError as exc:
                raise SetupError(
                    f"the engine could not create a container from the image: {exc.explanation or exc}"
                ) from None
        return self.container

    def set_limits(self, limits: Limits) -> None:
        """Apply the declared resources to the created container, before it starts."""
        self.limits = limits
        if self.container is not None and not self.started:
            try:
                self.container.update(**engine_options(limits))
            except docker.errors.APIError as exc:
                if exc.status_code in (404, 405, 501) and self._still_there():
                    # An engine without the update endpoint (Podman 4's Docker API): create it anew.
                    container, self.container = self.container, None
                    container.remove(force=True, v=True)
                    self.create()
                    return
                raise SetupError(
                    f"the engine refused the declared resources: {exc.explanation or exc}"
                ) from None

    def _still_there(self) -> bool:
        assert self.container is not None
        try:
            self.container.reload()
        except docker.errors.NotFound:
            return False
        return True

    def start(self) -> None:
        container = self.create()
        began = time.monotonic()
        try:
            container.start()
            container.reload()
        except docker.errors.APIError as exc:
            raise SetupError(f"the engine could not start the image: {exc.explanation or exc}") from None
        self.started_at = began  # only once the engine did start it
        self._exit = ExitWatch(self._client, str(container.id), lambda: self.container is not None)
        bindings = (container.ports or {}).get(f"{self.model_port}/tcp") or []
        if bindings:
            host_ip, host_port = str(bindings[0].get("HostIp") or "0.0.0.0"), int(bindings[0]["HostPort"])
            self.published_at = f"{host_ip}:{host_port}"
            self._transport = self.speak(self.engine.reach_host, host_port)

    @property
    def container_id(self) -> str | None:
        return self.container.id if self.container is not None else None

    @property
    def engine_started_at(self) -> str | None:
        """When the engine started the container, in its own clock (RFC 3339), as last read."""
        if self.container is None:
            return None
        return (self.container.attrs.get("State") or {}).get("StartedAt")

    @property
    def transport(self) -> Transport | None:
        """How the model is spoken to: the HTTP client of its published port, once started."""
        return self._transport

    @property
    def reached_at(self) -> str | None:
        return self._transport.address if self._transport is not None else None

    def state(self) -> dict[str, Any]:
        assert self.container is not None
        try:
            self.container.reload()
        except docker.errors.NotFound:
            raise SetupError(f"the container {self.name} was removed while the harness used it") from None
        return dict(self.container.attrs.get("State") or {})

    def oom_killed(self) -> bool:
        """Whether the engine's state says the container was killed for exceeding its memory."""
        return bool(self.state().get("OOMKilled"))

    def listening(self) -> dict[int, bool]:
        assert self.container is not None
        return calls.listening(self.container)

    def oom_since(self, since: float) -> bool:
        assert self.container is not None
        return calls.oom_since(self._client, self.container, since)

    def exit_code(self) -> int | None:
        """The exit code if the container has stopped, else None (known at once, without a request)."""
        return self._exit.code() if self._exit is not None else None

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if the process is still running after ``timeout``."""
        return self._exit.wait(timeout) if self._exit is not None else None

    def stats(self, timeout: float) -> dict[str, Any] | None:
        """The engine's figures of the container: on a local engine read at once from its cgroup
        (localfs.cgroup_stats), else asked of the engine, which answers at its next collection."""
        if self.container is None:
            return None
        if self.engine.local and self.started:
            pid = (self.container.attrs.get("State") or {}).get("Pid")
            found = cgroup_stats(pid, str(self.container.id)) if isinstance(pid, int) else None
            if found is not None:
                return found
        return calls.stats(self._client, self.container, timeout)

    def kill(self) -> None:
        if self.container is not None:
            with contextlib.suppress(docker.errors.APIError):  # already gone
                self.container.kill()

    # -- files through the engine's archive endpoint, and the log (engine calls: calls.py) --

    def put_archive(self, path: str, archive: bytes | IO[bytes] | Iterable[bytes]) -> None:
        """Unpack a TAR (bytes, a file or an iterable of chunks) at ``path`` inside the container."""
        assert self.container is not None
        calls.put_archive(self.container, path, archive)

    def read_archive(self, path: str) -> contextlib.AbstractContextManager[tarfile.TarFile | None]:
        """A streamed TAR of ``path`` inside the container (None when it does not exist)."""
        assert self.container is not None
        return calls.read_archive(self._client, self.container, path)

    def read_file(self, path: str) -> contextlib.AbstractContextManager[tuple[int, IO[bytes]] | None]:
        """The regular file at ``path`` read from the host without the engine (its size and a
        stream), or None: then ask ``read_archive`` (see localfs.py for when and how)."""
        root = self._local_root()
        return root.regular_file(path) if root is not None else contextlib.nullcontext(None)

    def _local_root(self) -> ContainerRoot | None:
        # Tried once per container: on a remote engine, in a VM or without the right to look
        # into the model's root, every read goes through the engine.
        if not self._root_tried and self.container is not None and self.started and self.engine.local:
            self._root_tried = True
            pid = (self.container.attrs.get("State") or {}).get("Pid")
            self._root = ContainerRoot.open(pid) if isinstance(pid, int) else None
        return self._root

    def log_tail(self, lines: int = calls.LOG_TAIL_LINES, since: float | None = None) -> str:
        """The last lines of the container's output, bounded (see calls.log_tail)."""
        return (
            calls.log_tail(self._client, self.container, lines, since) if self.container is not None else ""
        )

    def remove(self) -> None:
        self._transport = None
        root, self._root = self._root, None
        if root is not None:
            root.close()
        if self.container is not None:
            container, self.container = self.container, None
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)  # v: the image's anonymous volumes too
        elif self._create_asked:  # its creation was interrupted: it may exist all the same
            with contextlib.suppress(docker.errors.NotFound):
                self._client.api.remove_container(self.name, force=True, v=True)
        self._create_asked = False


class ExitWatch:
    """The container's exit, awaited on a thread of its own: one long request, no polling."""

    def __init__(self, client: docker.DockerClient, container_id: str, wanted: Callable[[], bool]) -> None:
        self._client = client
        self._exited = threading.Event()
        self._status: int | None = None
        self._wanted = wanted  # False once the container is removed: nobody asks any more
        threading.Thread(
            target=self._watch, args=(container_id,), name="psc-harness-exit", daemon=True
        ).start()

    def _watch(self, container_id: str) -> None:
        while self._wanted():
            try:
                result = self._client.api.wait(container_id, timeout=EXIT_WAIT)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                continue  # still running; ask again
            except docker.errors.APIError:
                return  # removed
            self._status = int(result.get("StatusCode", -1))
            self._exited.set()
            return

    def code(self) -> int | None:
        return self._status if self._exited.is_set() else None

    def wait(self, timeout: float) -> int | None:
        self._exited.wait(timeout)
        return self.code()
