"""The Docker engine as the runtime of the harness (Podman too, through its Docker API).

The only part of the harness that imports the docker SDK. The rest reaches it through
the protocols of ``harness/runtime.py`` and the few names below.
"""

from __future__ import annotations

from .engine import resolve
from .runtime import DockerRuntime
from .sources import ImageSource, ReferenceSource, TarSource


def describe(engine_host: str | None) -> str:
    """The report header's line on the engine: which one, how chosen, where ports are reached."""
    return resolve(engine_host).describe()


__all__ = ["DockerRuntime", "ImageSource", "ReferenceSource", "TarSource", "describe"]
