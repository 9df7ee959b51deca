"""One model container: created with its limits, started safely, watched, stopped and removed.

Files reach the container and come back through the engine's archive endpoint, never
through a bind mount: the engine resolves every path inside the container's own file
system, so nothing the model writes can make the harness open a file of the host, and the
engine need not share the harness's file system at all.
"""

from __future__ import annotations

import contextlib
import json
import random
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.models.containers import Container

from .. import readiness
from ..errors import SetupError
from ..http import ModelClient
from ..readiness import Readiness
from ..runtime import Limits
from ..transport import Transport
from .engine import Engine, resolve

LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 16 * 1024
LOG_READ_LIMIT = 8 * 2**20  # the most of a log tail read before giving up on its end
STATS_MAX_BYTES = 256 * 1024  # one stats answer is a few KiB
EXIT_WAIT = 600.0  # seconds of one wait request for the container's exit, asked again after
PIDS_LIMIT = 1024  # always: a fork bomb stays inside the container
_LOOPBACK6 = "00000000000000000000000001000000"  # ::1 as /proc/net/tcp6 spells it


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
    ) -> None:
        self._client = client
        self.engine = engine or resolve()  # where the port is published and reached
        self.image_id = image_id
        self.labels = labels
        self.limits = limits or Limits()
        self.model_port = random_model_port()
        self.name = f"{name_prefix}-{self.model_port}-{random.randrange(16**6):06x}"
        self.container: Container | None = None
        self.http: ModelClient | None = None
        self.started_at: float | None = None  # time.monotonic() once the engine started it
        self._exited = threading.Event()
        self._exit_status: int | None = None
        self._create_asked = False
        self.published_at: str | None = None  # host address:port, as the engine published it

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
        watcher = threading.Thread(
            target=self._watch_exit, args=(container.id,), name="psc-harness-exit", daemon=True
        )
        watcher.start()
        bindings = (container.ports or {}).get(f"{self.model_port}/tcp") or []
        if bindings:
            host_ip, host_port = str(bindings[0].get("HostIp") or "0.0.0.0"), int(bindings[0]["HostPort"])
            self.published_at = f"{host_ip}:{host_port}"
            self.http = ModelClient(self.engine.reach_host, host_port)

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
        return self.http

    @property
    def reached_at(self) -> str | None:
        return self.http.address if self.http is not None else None

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

    def wait_ready(self, timeout: float) -> Readiness:
        """Poll GET /status until 200, the timeout, or the container's exit (harness/readiness.py)."""
        return readiness.wait_ready(self, timeout)

    def listening_ports(self, *, beyond_loopback: bool = False) -> set[int]:
        """The TCP ports something in the container listens on (empty when it cannot tell).

        ``beyond_loopback``: only those listened on at an address other than the container's
        loopback, the only ones the engine's published port can lead to.
        """
        return {port for port, outside in self.listening().items() if outside or not beyond_loopback}

    def listening(self) -> dict[int, bool]:
        """Each listening TCP port, and whether it listens beyond the container's loopback."""
        assert self.container is not None
        try:
            result = self.container.exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"], demux=False)
        except docker.errors.APIError:
            return {}
        if result.exit_code not in (0, 1) or not result.output:
            return {}
        ports: dict[int, bool] = {}
        for line in result.output.decode("ascii", errors="replace").splitlines()[:10_000]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:  # 0A: LISTEN
                address, port = fields[1].rsplit(":", 1)
                with contextlib.suppress(ValueError):
                    number = int(port, 16)
                    ports[number] = ports.get(number, False) or not _loopback(address)
        return ports

    def oom_since(self, since: float) -> bool:
        """Whether the engine reported an out-of-memory kill in the container since ``since`` (Unix time)."""
        assert self.container is not None
        try:
            events = self._client.api.events(
                since=int(since),
                until=int(time.time()) + 1,
                filters={"container": self.container.id, "event": "oom"},
            )
            with contextlib.closing(events):
                return any(True for _ in events)
        except (docker.errors.APIError, requests.RequestException):
            return False

    def _watch_exit(self, container_id: str) -> None:
        """Wait for the container's exit on a thread of its own: one long request, no polling."""
        while self.container is not None:
            try:
                result = self._client.api.wait(container_id, timeout=EXIT_WAIT)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                continue  # still running; ask again
            except docker.errors.APIError:
                return  # removed: nobody asks any more
            self._exit_status = int(result.get("StatusCode", -1))
            self._exited.set()
            return

    def exit_code(self) -> int | None:
        """The exit code if the container has stopped, else None (known at once, without a request)."""
        return self._exit_status if self._exited.is_set() else None

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if the process is still running after ``timeout``."""
        self._exited.wait(timeout)
        return self.exit_code()

    def stats(self, timeout: float) -> dict[str, Any] | None:
        """One read of the engine's stats of the container, within ``timeout``; None if none came."""
        if self.container is None:
            return None
        api = self._client.api
        try:
            # One-shot: the engine's last collection (it may wait for its next cycle, about a second).
            with api._get(
                api._url("/containers/{0}/stats", self.container.id),
                params={"stream": "false", "one-shot": "true"},
                stream=True,
                timeout=timeout,
            ) as response:
                if response.status_code != 200:
                    return None
                body = response.raw.read(STATS_MAX_BYTES + 1)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            return None
        if len(body) > STATS_MAX_BYTES:
            return None
        try:
            found = json.loads(body)
        except (ValueError, RecursionError):
            return None
        return found if isinstance(found, dict) else None

    def kill(self) -> None:
        if self.container is not None:
            with contextlib.suppress(docker.errors.APIError):  # already gone
                self.container.kill()

    # -- files, through the engine's archive endpoint ------------------------------------

    def put_archive(self, path: str, archive: bytes | IO[bytes] | Iterable[bytes]) -> None:
        """Unpack a TAR (bytes, a file or an iterable of chunks) at ``path`` inside the container."""
        assert self.container is not None
        try:
            if not self.container.put_archive(path, archive):
                raise SetupError(f"the engine did not copy the job's files to {path}")
        except docker.errors.APIError as exc:
            raise SetupError(f"the engine could not copy files into the container: {exc}") from None

    @contextlib.contextmanager
    def read_archive(self, path: str) -> Iterator[tarfile.TarFile | None]:
        """A streamed TAR of ``path`` inside the container (None when it does not exist).

        Read as it arrives, member by member; leaving the block closes the stream, so a
        huge file the model wrote is never read further than the caller wants.
        """
        assert self.container is not None
        api = self._client.api
        try:
            response = api._get(
                api._url("/containers/{0}/archive", self.container.id), params={"path": path}, stream=True
            )
        except requests.RequestException as exc:
            raise SetupError(f"the engine could not read {path} from the container: {exc}") from None
        with response:
            if response.status_code == 404:
                yield None
                return
            try:
                response.raise_for_status()
            except requests.HTTPError as exc:
                raise SetupError(f"the engine could not read {path} from the container: {exc}") from None
            # "r|*": the engine may compress the archive; read as a stream, it stays bounded.
            with tarfile.open(fileobj=response.raw, mode="r|*") as archive:
                yield archive

    # -- logs ------------------------------------------------------------------------------

    def log_tail(self, lines: int = LOG_TAIL_LINES, since: float | None = None) -> str:
        """The last lines of the container's output, at most LOG_TAIL_BYTES of them.

        Read from a raw response and cut at the cap: a container may write lines of any
        length, and the harness must not hold them. ``since`` (a Unix time) keeps to the
        lines written from then on.
        """
        if self.container is None:
            return ""
        api = self._client.api
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "tail": lines, "follow": 0}
        if since is not None:
            params["since"] = int(since)
        frames = _LogFrames()
        try:
            with api._get(
                api._url("/containers/{0}/logs", self.container.id), params=params, stream=True
            ) as response:
                response.raise_for_status()
                # The end of the log matters most: keep a rolling window, read a bounded amount.
                while frames.read < LOG_READ_LIMIT:
                    chunk = response.raw.read(64 * 1024)
                    if not chunk:
                        break
                    frames.feed(chunk)
        except (docker.errors.APIError, requests.RequestException, urllib3.exceptions.HTTPError):
            return ""
        text = frames.text.decode("utf-8", errors="replace").rstrip()
        return text if len(text) <= LOG_TAIL_BYTES else "[...]" + text[-LOG_TAIL_BYTES:]

    def remove(self) -> None:
        self.http = None
        if self.container is not None:
            container, self.container = self.container, None
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)  # v: the image's anonymous volumes too
        elif self._create_asked:  # its creation was interrupted: it may exist all the same
            with contextlib.suppress(docker.errors.NotFound):
                self._client.api.remove_container(self.name, force=True, v=True)
        self._create_asked = False


def _loopback(address: str) -> bool:
    """127.0.0.0/8 (little-endian hex, its first byte last) or ::1, as /proc/net/tcp spells them."""
    return (len(address) == 8 and address.endswith("7F")) or address == _LOOPBACK6


class _LogFrames:
    """Docker's multiplexed log stream (8-byte headers: stream, 0, 0, 0, big-endian size),
    decoded as it arrives into a rolling window of the last 2 x LOG_TAIL_BYTES."""

    def __init__(self) -> None:
        self.read = 0
        self.text = b""
        self._pending = b""
        self._framed: bool | None = None  # a TTY container's log has no frames

    def feed(self, chunk: bytes) -> None:
        self.read += len(chunk)
        self._pending += chunk
        if self._framed is None and len(self._pending) >= 8:
            self._framed = self._pending[0] in (0, 1, 2) and self._pending[1:4] == b"\0\0\0"
        if self._framed is False:
            self._keep(self._pending)
            self._pending = b""
            return
        while len(self._pending) >= 8:
            size = int.from_bytes(self._pending[4:8], "big")
            if len(self._pending) < 8 + size:
                break
            self._keep(self._pending[8 : 8 + size])
            self._pending = self._pending[8 + size :]

    def _keep(self, payload: bytes) -> None:
        self.text = (self.text + payload)[-2 * LOG_TAIL_BYTES :]
