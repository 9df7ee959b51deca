"""A real registry on loopback: Debian's docker-registry (CNCF distribution) with htpasswd auth."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import requests


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:<port>: Docker treats loopback registries as insecure, so plain HTTP works
    username: str
    password: str

    def auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_registry(workdir: Path, username: str, password: str) -> Iterator[Registry]:
    import bcrypt

    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed (tests/install-system-deps.sh installs it)"
    port = free_port()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    (workdir / "htpasswd").write_text(f"{username}:{hashed}\n")
    (workdir / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        f"auth: {{htpasswd: {{realm: psc-test, path: {workdir / 'htpasswd'}}}}}\n"
    )
    log = (workdir / "registry.log").open("wb")
    process = subprocess.Popen(
        [binary, "serve", str(workdir / "config.yml")], stdout=log, stderr=subprocess.STDOUT
    )
    session = requests.Session()
    session.trust_env = False  # may run in a thread: never iterate os.environ for proxies
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if session.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 401:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, (workdir / "registry.log").read_text()
            assert time.monotonic() < deadline, "the registry did not come up within 30 s"
            time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", username, password)
    finally:
        session.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def push(client: docker.DockerClient, registry: Registry, source: str, repository: str) -> tuple[str, str]:
    """Tag ``source`` into the registry and push it; returns the reference and the digest.

    A push's errors arrive only in its stream. The local tag is removed again: the engine
    holds the image under its other names only.
    """
    ref = f"{registry.host}/{repository}:latest"
    client.images.get(source).tag(ref)
    digest = ""
    try:
        for event in client.images.push(ref, stream=True, decode=True, auth_config=registry.auth()):
            assert "error" not in event, event
            digest = (event.get("aux") or {}).get("Digest", digest)
    finally:
        client.images.remove(ref)
    assert digest.startswith("sha256:"), f"the push of {ref} reported no digest"
    return ref, digest
