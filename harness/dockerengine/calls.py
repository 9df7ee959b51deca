"""The engine's calls on one container that read or move data: each bounded, none following
anything the model wrote on the host (files travel through the engine's archive endpoint).

Files reach the container and come back through the engine's archive endpoint, never
through a bind mount: the engine resolves every path inside the container's own file
system, so nothing the model writes can make the harness open a file of the host, and the
engine need not share the harness's file system at all.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.models.containers import Container

from ..errors import SetupError

LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 16 * 1024
LOG_READ_LIMIT = 8 * 2**20  # the most of a log tail read before giving up on its end
STATS_MAX_BYTES = 256 * 1024  # one stats answer is a few KiB
_LOOPBACK6 = "00000000000000000000000001000000"  # ::1 as /proc/net/tcp6 spells it


def listening(container: Container) -> dict[int, bool]:
    """Each listening TCP port, and whether it listens beyond the container's loopback."""
    try:
        result = container.exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"], demux=False)
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


def oom_since(client: docker.DockerClient, container: Container, since: float) -> bool:
    """Whether the engine reported an out-of-memory kill in the container since ``since`` (Unix time)."""
    try:
        events = client.api.events(
            since=int(since),
            until=int(time.time()) + 1,
            filters={"container": container.id, "event": "oom"},
        )
        with contextlib.closing(events):
            return any(True for _ in events)
    except (docker.errors.APIError, requests.RequestException):
        return False


def stats(client: docker.DockerClient, container: Container, timeout: float) -> dict[str, Any] | None:
    """One read of the engine's stats of the container, within ``timeout``; None if none came."""
    api = client.api
    try:
        # One-shot: the engine's last collection (it may wait for its next cycle, about a second).
        with api._get(
            api._url("/containers/{0}/stats", container.id),
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


def put_archive(container: Container, path: str, archive: bytes | IO[bytes] | Iterable[bytes]) -> None:
    """Unpack a TAR (bytes, a file or an iterable of chunks) at ``path`` inside the container."""
    try:
        if not container.put_archive(path, archive):
            raise SetupError(f"the engine did not copy the job's files to {path}")
    except docker.errors.APIError as exc:
        raise SetupError(f"the engine could not copy files into the container: {exc}") from None


@contextlib.contextmanager
def read_archive(
    client: docker.DockerClient, container: Container, path: str
) -> Iterator[tarfile.TarFile | None]:
    """A streamed TAR of ``path`` inside the container (None when it does not exist).

    Read as it arrives, member by member; leaving the block closes the stream, so a
    huge file the model wrote is never read further than the caller wants.
    """
    api = client.api
    try:
        response = api._get(
            api._url("/containers/{0}/archive", container.id), params={"path": path}, stream=True
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


def log_tail(
    client: docker.DockerClient, container: Container, lines: int = LOG_TAIL_LINES, since: float | None = None
) -> str:
    """The last lines of the container's output, at most LOG_TAIL_BYTES of them.

    Read from a raw response and cut at the cap: a container may write lines of any
    length, and the harness must not hold them. ``since`` (a Unix time) keeps to the
    lines written from then on.
    """
    api = client.api
    params: dict[str, Any] = {"stdout": 1, "stderr": 1, "tail": lines, "follow": 0}
    if since is not None:
        params["since"] = int(since)
    frames = _LogFrames()
    try:
        with api._get(api._url("/containers/{0}/logs", container.id), params=params, stream=True) as response:
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
