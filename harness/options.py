"""Plain option types and constants: cheap to import, for the plugin's entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compare import Comparator

EXIT_NOT_EVALUATED = 6  # the image could not be evaluated at all: not a verdict on it
PASSWORD_ENV = "PSC_REGISTRY_PASSWORD"
USERNAME_ENV = "PSC_REGISTRY_USERNAME"
ENGINE_HOST_ENV = "PSC_ENGINE_HOST"
DEFAULT_SHUTDOWN_TIMEOUT = 15.0
PULL_POLICIES = ("always", "missing", "never")
# The share of each timeout that should be left when ready and after the slowest /run:
# the platform's machines may be slower than the author's.
DEFAULT_MARGIN = 0.5


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def redact(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True)
class RunOptions:
    model_yaml: Path | None = None
    model_data: Path | None = None
    status_timeout: float | None = None
    run_timeout: float | None = None
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    pull: str = "missing"
    credentials: Credentials | None = None
    keep_image: bool = False
    compare_bytes: bool = False  # expected outputs byte for byte, even when declared JSON
    margin: float = DEFAULT_MARGIN  # less left is a warning
    strict: bool = False  # rehearsal warnings fail the image
    engine_host: str | None = None  # where the engine's published ports are reached (default: engine.py)
    rel_tol: float = 0.0  # numbers in JSON outputs: |a - e| <= max(rel_tol * max(|a|, |e|), abs_tol)
    abs_tol: float = 0.0
    tolerance_source: str = "exact"  # the options that gave the tolerance, for messages
    protocol: str = "http"  # which variant of the contract: "http" or "grpc" (PROTOCOLS)
    report_dir: Path | None = None  # the outputs of failed examples are kept under it
    comparator: Comparator | None = field(default=None, compare=False)  # the author's hook, if any
