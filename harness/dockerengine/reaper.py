"""Remove what runs that were killed outright (SIGKILL) left in the engine.

Only resources whose owner label names a process of this host and PID namespace that is
gone are removed (see ``labels``): another live run's, here or elsewhere, never are.
"""

from __future__ import annotations

import contextlib

import docker
import docker.errors

from ..labels import OWNER_LABEL, owner_gone
from .sources import reap_loaded


def reap(client: docker.DockerClient) -> list[str]:
    """Remove orphaned containers (with their anonymous volumes) and the images they loaded."""
    removed: list[str] = []
    # Summaries, not inspections: another run may remove its containers in between.
    for summary in client.api.containers(all=True, filters={"label": OWNER_LABEL}):
        if owner_gone((summary.get("Labels") or {}).get(OWNER_LABEL, "")):
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(summary["Id"], force=True, v=True)
                name = (summary.get("Names") or ["/" + summary["Id"][:12]])[0].lstrip("/")
                removed.append(f"container {name}")
    return removed + reap_loaded(client)
