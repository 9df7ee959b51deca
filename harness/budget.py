"""The run's effective timeouts and resources: the command line, then model.yaml, then the default.

One place decides them, so every check, message and bound reads the same value.
"""

from __future__ import annotations

from .declared import Declared
from .options import RunOptions
from .runtime import Limits

DEFAULT_STATUS_TIMEOUT = 60.0
DEFAULT_RUN_TIMEOUT = 60.0
EXTRA_JOBS = 5  # room for the author's own jobs in the run's bound
BOUND_SLACK = 60.0


def effective(option: float | None, declared: float | None, default: float) -> float:
    """The one precedence rule of every timeout: the command line, then model.yaml, then the default."""
    return option or declared or default


class Budget:
    """What the options and the author's model.yaml allow the model, read when asked (model.yaml
    is found only once the image is prepared)."""

    def __init__(self, options: RunOptions, declared: Declared) -> None:
        self.options = options
        self.declared = declared

    @property
    def status_timeout(self) -> float:
        metadata = self.declared.metadata
        return effective(
            self.options.status_timeout, metadata.status_timeout if metadata else None, DEFAULT_STATUS_TIMEOUT
        )

    @property
    def run_timeout(self) -> float:
        metadata = self.declared.metadata
        return effective(
            self.options.run_timeout, metadata.run_timeout if metadata else None, DEFAULT_RUN_TIMEOUT
        )

    @property
    def shutdown_timeout(self) -> float:
        return self.options.shutdown_timeout

    @property
    def limits(self) -> Limits:
        metadata = self.declared.metadata
        return Limits() if metadata is None else Limits(metadata.memory_bytes, metadata.cpu_count)

    @property
    def gpu_count(self) -> int:
        metadata = self.declared.metadata
        return metadata.gpu_count if metadata else 0

    def bound(self, run_checks: int) -> float:
        """The longest a battery of ``run_checks`` /run checks may take once prepared (uploads
        are not counted)."""
        requests = run_checks + EXTRA_JOBS
        return self.status_timeout + requests * self.run_timeout + 2 * self.shutdown_timeout + BOUND_SLACK
