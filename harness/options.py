"""Plain option types and constants: cheap to import, for the plugin's entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

EXIT_NOT_EVALUATED = 6  # the image could not be evaluated at all: not a verdict on it
PASSWORD_ENV = "PSC_REGISTRY_PASSWORD"
USERNAME_ENV = "PSC_REGISTRY_USERNAME"
DEFAULT_SHUTDOWN_TIMEOUT = 15.0
PULL_POLICIES = ("always", "missing", "never")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def redact(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


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
    margin: float = 0.5  # the share of each timeout that should be left (a warning otherwise)
    strict: bool = False  # rehearsal warnings fail the image
