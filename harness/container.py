"""One model container: started safely, watched while it loads, stopped and removed."""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.models.containers import Container

from .errors import SetupError
from .http import Exchange, ModelClient

LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 16 * 1024
LOG_READ_LIMIT = 8 * 2**20  # the most of a log tail read before giving up on its end
POLL_START = 0.01  # seconds between /status polls, doubling up to POLL_CAP
POLL_CAP = 0.05


def random_model_port() -> int:
    # Never 80 or 8080: an image that ignores PSC_MODEL_PORT must not pass by luck.
    return random.randint(20000, 59999)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None
    cpu_count: float | None


@dataclass
class Readiness:
    ready: bool = False
    polls: int = 0
    seconds: float = 0.0  # from the container's start to the verdict
    first_accept_seconds: float | None = None  # first connection the server took (answered or dropped)
    first_answer_seconds: float | None = None  # first HTTP answer, of any status
    last: Exchange | None = None
    exit_code: int | None = None  # set when the container exited while loading
    oom_killed: bool = False


class ModelContainer:
    """Use as a context manager: whatever happens, the container is removed on exit."""

    def __init__(
        self,
        client: docker.DockerClient,
        image_id: str,
        *,
        labels: dict[str, str],
        limits: Limits,
        mounts: dict[Path, tuple[str, str]],
        name_prefix: str = "psc-model",
    ) -> None:
        self._client = client
        self.image_id = image_id
        self.labels = labels
        self.limits = limits
        self.mounts = mounts
        self.model_port = random_model_port()
        self.name = f"{name_prefix}-{self.model_port}-{random.randrange(16**6):06x}"
        self.container: Container | None = None
        self.http: ModelClient | None = None
        self.started_at = 0.0

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
        return self.started_at > 0

    def create(self) -> Container:
        """Create the container (not started): its files can be read before it runs."""
        if self.container is None:
            try:
                self.container = self._client.containers.create(
                    self.image_id,
                    name=self.name,
                    environment={"PSC_MODEL_PORT": str(self.model_port)},
                    ports={f"{self.model_port}/tcp": ("127.0.0.1", None)},
                    labels=self.labels,
                    volumes={
                        str(host): {"bind": inside, "mode": mode}
                        for host, (inside, mode) in self.mounts.items()
                    },
                    privileged=False,
                    **_resources(self.limits),
                )
            except docker.errors.APIError as exc:
                raise SetupError(
                    f"the engine could not create a container from the image: {exc.explanation or exc}"
                ) from None
        return self.container

    def set_limits(self, limits: Limits) -> None:
        """Apply the declared resources to the created container, before it starts."""
        self.limits = limits
        if self.container is not None and not self.started and _resources(limits):
            try:
                self.container.update(**_resources(limits))
            except docker.errors.APIError as exc:
                raise SetupError(
                    f"the engine refused the declared resources: {exc.explanation or exc}"
                ) from None

    def start(self) -> None:
        container = self.create()
        try:
            self.started_at = time.monotonic()
            container.start()
            container.reload()
        except docker.errors.APIError as exc:
            raise SetupError(f"the engine could not start the image: {exc.explanation or exc}") from None
        bindings = (container.ports or {}).get(f"{self.model_port}/tcp") or []
        if bindings:
            self.http = ModelClient(f"http://127.0.0.1:{bindings[0]['HostPort']}")

    def state(self) -> dict[str, Any]:
        assert self.container is not None
        self.container.reload()
        return dict(self.container.attrs.get("State") or {})

    def wait_ready(self, timeout: float) -> Readiness:
        """Poll GET /status until 200, the timeout, or the container's exit, whichever is first."""
        deadline = self.started_at + timeout
        seen = Readiness()
        interval = POLL_START
        while True:
            now = time.monotonic()
            if self.http is not None and now < deadline:
                # The first /status may block while the model loads: the read may take the rest.
                seen.last = self.http.request("GET", "/status", timeout=max(deadline - now, 0.05))
                seen.polls += 1
                since_start = time.monotonic() - self.started_at
                if seen.first_accept_seconds is None and seen.last.error != "connection refused":
                    seen.first_accept_seconds = since_start
                if seen.first_answer_seconds is None and seen.last.status is not None:
                    seen.first_answer_seconds = since_start
                if seen.last.status == 200 and seen.last.error is None:  # the whole answer, in time
                    seen.ready = True
                    break
            state = self.state()
            if state.get("Status") not in ("created", "running"):
                seen.exit_code = int(state.get("ExitCode") or 0)
                seen.oom_killed = bool(state.get("OOMKilled"))
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(deadline - time.monotonic(), 0)))
            interval = min(interval * 2, POLL_CAP)
        seen.seconds = time.monotonic() - self.started_at
        return seen

    def exit_code(self) -> int | None:
        """The exit code if the container has stopped, else None."""
        state = self.state()
        return None if state.get("Status") in ("created", "running") else int(state.get("ExitCode") or 0)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if the process is still running after ``timeout``."""
        assert self.container is not None
        try:
            return int(self.container.wait(timeout=timeout)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return None

    def kill(self) -> None:
        if self.container is not None:
            with contextlib.suppress(docker.errors.APIError):  # already gone
                self.container.kill()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the container's output, at most LOG_TAIL_BYTES of them.

        Read from a raw response and cut at the cap: a container may write lines of any
        length, and the harness must not hold them.
        """
        if self.container is None:
            return ""
        api = self._client.api
        params = {"stdout": 1, "stderr": 1, "tail": lines, "follow": 0}
        frames = _LogFrames()
        try:
            with api._get(
                api._url("/containers/{0}/logs", self.container.id), params=params, stream=True
            ) as response:
                response.raise_for_status()
                # The end of the log matters most: keep a rolling window, read a bounded amount.
                while frames.read < LOG_READ_LIMIT:
                    chunk = response.raw.read1(64 * 1024)
                    if not chunk:
                        break
                    frames.feed(chunk)
        except (docker.errors.APIError, requests.RequestException, urllib3.exceptions.HTTPError):
            return ""
        text = frames.text.decode("utf-8", errors="replace").rstrip()
        return text if len(text) <= LOG_TAIL_BYTES else "[...]" + text[-LOG_TAIL_BYTES:]

    def remove(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.container is not None:
            container, self.container = self.container, None
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)  # v: the image's anonymous volumes too


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


def _resources(limits: Limits) -> dict[str, int]:
    resources: dict[str, int] = {}
    if limits.memory_bytes:
        # No swap beyond the declared memory, as on the platform.
        resources.update(mem_limit=limits.memory_bytes, memswap_limit=limits.memory_bytes)
    if limits.cpu_count:
        # The same as --cpus, in the form that can also be updated before the start.
        resources.update(cpu_period=100_000, cpu_quota=int(limits.cpu_count * 100_000))
    return resources
