"""Which Docker engine the harness talks to, and where it reaches the model's published port.

The engine is the one the ``docker`` CLI would use: ``DOCKER_HOST`` (with
``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``), else the current docker context
(``DOCKER_CONTEXT``, else ``currentContext`` of the Docker configuration), else the local
socket. Files never need a shared file system (they travel through the engine's API), so
only the model's port depends on where the engine is:

- a local engine (a unix socket or a named pipe) publishes it on 127.0.0.1 only, where the
  harness reaches it;
- an engine reached over the network (``tcp://``, ``ssh://``) publishes it on its default
  address (all its interfaces unless its daemon's ``ip`` setting says otherwise), and the
  harness reaches it at the engine's host;
- ``--engine-host`` (``PSC_ENGINE_HOST``) names the host to reach it at instead, for setups
  where the engine's ports are reached elsewhere than its API (a CI job container and its
  sibling containers, a tunnel); the port is then published on the engine's default address.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import docker.tls
import docker.utils

from ..errors import SetupError
from ..http import host_port as _hostport
from .images import reason

LOOPBACK = "127.0.0.1"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
LOCAL_SCHEMES = ("unix", "npipe", "fd")
PROBE_TIMEOUT = 10.0  # seconds for the first TCP connection to a remote engine's API


@dataclass(frozen=True)
class Engine:
    url: str  # the engine's API, as the docker client is given it
    origin: str  # where that came from: "DOCKER_HOST", "docker context NAME", "the default socket"
    reach_host: str  # where the model's published port is connected to
    publish_host: str | None  # the address asked for when publishing; None: the engine's default
    host_given: bool = False  # reach_host comes from --engine-host / PSC_ENGINE_HOST
    tls: docker.tls.TLSConfig | None = None
    error: str | None = None  # what makes the engine unusable, said when connecting

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower() if "://" in self.url else "tcp"

    @property
    def local(self) -> bool:
        return self.scheme in LOCAL_SCHEMES

    @property
    def where(self) -> str:
        return f"{self.url} ({self.origin})"

    def describe(self) -> str:
        """One line for the run's header: which engine, what is published where."""
        if self.error is not None:
            return f"engine: {self.error}"
        kind = "local" if self.local else "remote"
        if self.publish_host is not None and self.publish_host == self.reach_host:
            where = f"published on {self.publish_host} only"
        else:
            where = (
                "published on the engine's default address (all its interfaces unless its daemon's "
                f"`ip` setting says otherwise) and reached at {self.reach_host}"
                + (" (--engine-host)" if self.host_given else "")
            )
        return f"engine: {self.url} ({self.origin}, {kind}): the model's port is {where}"

    def port_bindings(self, port: int) -> dict[str, Any]:
        """The ``ports`` argument of a container that publishes ``port`` (on a random host port)."""
        return {f"{port}/tcp": (self.publish_host, None) if self.publish_host else None}

    def connect(self, timeout: float = 30.0) -> docker.DockerClient:
        """A client for this engine; an engine that cannot be reached is one SetupError naming it."""
        if self.error is not None:
            raise SetupError(self.error)
        self._probe()
        try:
            return docker.DockerClient(
                base_url=self.url,
                tls=self.tls or False,
                version="auto",
                timeout=int(timeout),
                use_ssh_client=self.scheme == "ssh",  # the system's ssh and its configuration, as the CLI
            )
        except docker.errors.DockerException as exc:
            raise SetupError(f"cannot reach the Docker engine {self.where}: {reason(exc)}") from None

    def _probe(self) -> None:
        """For a TCP engine: a connection to its API first, to say plainly why it fails, and soon."""
        if self.scheme not in ("tcp", "http", "https"):
            return
        host, port = api_address(self.url, self.tls is not None)
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
        except OSError as exc:
            raise SetupError(
                f"cannot reach the Docker engine {self.where}: {connect_failure(exc, PROBE_TIMEOUT)} "
                f"at {_hostport(host, port)}"
            ) from None

    def unreachable_port(self, tried: str, why: str, published: str) -> SetupError:
        """The model's published port could not be reached: what was tried, and what to change."""
        hint = (
            "the harness may run elsewhere than the engine's machine (in a container?): "
            "give the host where the engine's published ports are reached with --engine-host"
        )
        if self.host_given:
            hint = "is --engine-host right?"
        return SetupError(
            f"cannot reach the model's published port at {tried} ({why}); the engine {self.where} "
            f"published it on {published}; {hint}"
        )


def resolve(host_override: str | None = None, environ: Mapping[str, str] | None = None) -> Engine:
    """The engine the docker CLI would use, and where the model's published port is reached."""
    env = os.environ if environ is None else environ
    tls: docker.tls.TLSConfig | None = None
    error: str | None = None
    if env.get("DOCKER_HOST"):
        url = env["DOCKER_HOST"].strip()
        origin = "DOCKER_HOST"
        try:
            tls = docker.utils.kwargs_from_env(environment=dict(env)).get("tls")
        except docker.errors.DockerException as exc:
            error = f"DOCKER_CERT_PATH / DOCKER_TLS_VERIFY: {exc}"
    else:
        name = env.get("DOCKER_CONTEXT") or current_context(env)
        if name and name != "default":
            origin = f"docker context {name}"
            try:
                url, tls = context_endpoint(name, env)
            except SetupError as exc:
                named_by = "DOCKER_CONTEXT" if env.get("DOCKER_CONTEXT") else "currentContext in config.json"
                url, error = DEFAULT_SOCKET, f"{exc} (named by {named_by}; `docker context ls` lists them)"
        else:
            url, origin = DEFAULT_SOCKET, "the default socket"
    engine_host = host_of(url)
    if error is None and engine_host is None and url.split("://", 1)[0].lower() not in LOCAL_SCHEMES:
        error = f"the engine address {url} ({origin}) names no host"
    local = url.split("://", 1)[0].lower() in LOCAL_SCHEMES
    if host_override:
        reach, publish = host_override, None
    elif local:
        reach, publish = LOOPBACK, LOOPBACK
    else:
        reach, publish = engine_host or LOOPBACK, None
    return Engine(url, origin, reach, publish, bool(host_override), tls, error)


def host_of(url: str) -> str | None:
    """The host part of an engine address (None for a socket)."""
    if "://" not in url:
        url = f"tcp://{url}"  # docker also takes a bare host:port
    scheme = url.split("://", 1)[0].lower()
    if scheme in LOCAL_SCHEMES:
        return None
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def api_address(url: str, tls: bool) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    default = 2376 if tls or parts.scheme == "https" else 2375
    return parts.hostname or LOOPBACK, parts.port or default


def config_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DOCKER_CONFIG") or Path.home() / ".docker")


def current_context(env: Mapping[str, str]) -> str | None:
    try:
        config = json.loads((config_dir(env) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("currentContext") if isinstance(config, dict) else None
    return str(name) if name else None


def context_endpoint(name: str, env: Mapping[str, str]) -> tuple[str, docker.tls.TLSConfig | None]:
    """The docker endpoint of a named context, and its TLS material, as the CLI stores them."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    contexts = config_dir(env) / "contexts"
    meta_file = contexts / "meta" / digest / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
        endpoint = meta["Endpoints"]["docker"]
        host = str(endpoint["Host"])
    except FileNotFoundError:
        raise SetupError(f"the docker context {name} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SetupError(f"cannot read the docker context {name} from {meta_file}: {exc}") from None
    tls_dir = contexts / "tls" / digest / "docker"
    ca, cert, key = (tls_dir / f for f in ("ca.pem", "cert.pem", "key.pem"))
    tls = None
    if ca.is_file() or cert.is_file():
        tls = docker.tls.TLSConfig(
            client_cert=(str(cert), str(key)) if cert.is_file() and key.is_file() else None,
            ca_cert=str(ca) if ca.is_file() else None,
            verify=not endpoint.get("SkipTLSVerify", False),
        )
    return host, tls


def connect_failure(exc: OSError, timeout: float) -> str:
    """Why a TCP connection failed, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no connection within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    return exc.strerror or str(exc) or type(exc).__name__
