"""The suite's view of a shared Docker engine.

Other harness runs (a benchmark, a developer's own run, another copy of this suite) may use
the same engine at the same time. The suite therefore never looks at "every container with
the harness label": it watches the engine's event stream and keeps the containers whose
owner label names a process of its own process tree, i.e. a harness run that this suite
started. Everything it removes, it removes by container id from that record.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils

from tests.harness_api import LABEL, OWNER_LABEL, owner_pid, owner_token

# The environment as the session started (pytest changes PYTEST_CURRENT_TEST while tests
# run: a thread that iterates os.environ meanwhile can fail).
ENVIRONMENT = dict(os.environ)


def client(timeout: int = 120) -> docker.DockerClient:
    """A client of the engine of the environment that never reads the environment again:
    requests looks proxies up by iterating os.environ on every call, which races with the
    main thread when the harness runs are carried out in threads."""
    made = docker.DockerClient(
        **docker.utils.kwargs_from_env(environment=ENVIRONMENT), version="auto", timeout=timeout
    )
    made.api.trust_env = False
    return made


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def ancestry(pid: int) -> tuple[int, ...]:
    """``pid`` and its ancestors, read from /proc while they are alive."""
    chain = [pid]
    while (parent := parent_pid(chain[-1])) not in (None, 0) and len(chain) < 64:
        chain.append(parent)  # type: ignore[arg-type]
    return tuple(chain)


def caught_signals(pid: int) -> int:
    """The SigCgt mask of a process: which signals it has installed a handler for."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0


@dataclass
class ContainerRecord:
    """One container a harness run created, as the engine reported it."""

    id: str
    name: str
    labels: dict[str, str]
    image: str
    chain: tuple[int, ...]  # the owner process and its ancestors when the container was created
    created: float
    owner_token: str  # the token of the owner label's pid, computed while it ran
    started: float | None = None
    destroyed: float | None = None
    inspect: dict[str, Any] | None = None  # taken as soon as it started

    def owned_by(self, pid: int) -> bool:
        return pid in self.chain

    @property
    def volumes(self) -> list[str]:
        mounts = (self.inspect or {}).get("Mounts") or []
        return [m["Name"] for m in mounts if m.get("Type") == "volume" and m.get("Name")]


@dataclass
class ImageEvent:
    action: str
    ref: str
    at: float


@dataclass
class EngineWatch:
    """Records, from the engine's events, the containers created by this process's descendants."""

    client: docker.DockerClient
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    image_events: list[ImageEvent] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _streams: list[Any] = field(default_factory=list)

    def start(self) -> EngineWatch:
        since = time.time() - 1
        container_stream = self.client.events(
            decode=True, since=since, filters={"type": "container", "label": LABEL}
        )
        image_stream = self.client.events(decode=True, since=since, filters={"type": "image"})
        self._streams = [container_stream, image_stream]
        for target, stream in ((self._containers, container_stream), (self._images, image_stream)):
            threading.Thread(target=target, args=(stream,), daemon=True, name="engine-watch").start()
        return self

    def close(self) -> None:
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.close()

    def _containers(self, stream: Iterator[dict[str, Any]]) -> None:
        me = os.getpid()
        with contextlib.suppress(Exception):
            for event in stream:
                action = event.get("Action") or event.get("status") or ""
                actor = event.get("Actor") or {}
                cid = actor.get("ID") or event.get("id") or ""
                attributes = actor.get("Attributes") or {}
                at = event.get("timeNano", time.time_ns()) / 1e9
                with self._lock:
                    record = self.containers.get(cid)
                    if action == "create" and record is None:
                        pid = owner_pid(attributes.get(OWNER_LABEL, ""))
                        chain = ancestry(pid) if pid else ()
                        if me not in chain:
                            continue  # another run's container: not ours to look at
                        labels = {k: v for k, v in attributes.items() if k.startswith(LABEL)}
                        self.containers[cid] = ContainerRecord(
                            cid,
                            attributes.get("name", ""),
                            labels,
                            attributes.get("image", ""),
                            chain,
                            at,
                            owner_token(chain[0]),
                        )
                    elif record is not None and action == "start":
                        record.started = at
                    elif record is not None and action == "destroy":
                        record.destroyed = at
                    self._lock.notify_all()
                if action == "start" and cid in self.containers:
                    # Its configuration while it runs: what the engine really applied.
                    with contextlib.suppress(docker.errors.APIError):
                        inspected = self.client.api.inspect_container(cid)
                        with self._lock:
                            self.containers[cid].inspect = inspected
                            self._lock.notify_all()

    def _images(self, stream: Iterator[dict[str, Any]]) -> None:
        with contextlib.suppress(Exception):
            for event in stream:
                actor = event.get("Actor") or {}
                ref = actor.get("ID") or event.get("id") or ""
                at = event.get("timeNano", time.time_ns()) / 1e9
                with self._lock:
                    self.image_events.append(ImageEvent(event.get("Action") or "", ref, at))
                    self._lock.notify_all()

    def owned_by(self, pid: int) -> list[ContainerRecord]:
        with self._lock:
            return sorted((r for r in self.containers.values() if r.owned_by(pid)), key=lambda r: r.created)

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked at every event), at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))
        return True

    def images_between(self, action: str, since: float, until: float) -> list[str]:
        with self._lock:
            return [e.ref for e in self.image_events if e.action == action and since <= e.at <= until]


class CountingProxy:
    """A Unix-socket relay to the engine that counts the bytes the engine sends back.

    Given to a harness run as DOCKER_HOST, it tells how much the harness read from the
    engine in all (a log read whole would show as hundreds of MiB).
    """

    def __init__(self, path: Path, engine: str = "/var/run/docker.sock") -> None:
        self.path = path
        self.engine = engine
        self.received = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True, name="counting-proxy").start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._server.accept()
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(self.engine)
                threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
                threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(1 << 16):
                if count:
                    with self._lock:
                        self.received += len(chunk)
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)  # the other direction may still be talking
        with contextlib.suppress(OSError):
            source.shutdown(socket.SHUT_RD)
        # Each socket is the source of exactly one pump: that pump closes it.
        source.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.close()
