"""Under pytest-xdist: one image, one worker, one container, whatever ``--dist`` says.

The harness's scheduler gives each worker whole images: every check of an image, and the
author's own tests that use it, go to the same worker, in collection order (/shutdown
last). Other tests are spread by module, as ``--dist loadscope`` would.
"""

from __future__ import annotations

from typing import Any

import pytest


def image_of(nodeid: str, labels: list[str]) -> str | None:
    """The image a test belongs to: its battery's, or the one it is parametrized by.

    A parameter id is matched whole (pytest joins several with "-"), the longest label
    first: ``m:10`` is never taken for ``m:1``, nor ``model.tar'`` for ``model.tar``.
    """
    base = nodeid.split("::", 1)[0]
    if base in labels:
        return base
    params = nodeid.rpartition("[")[2].removesuffix("]") if nodeid.endswith("]") else ""
    for label in sorted(labels, key=len, reverse=True):
        if f"-{params}-".find(f"-{label}-") >= 0:
            return label
    return labels[0] if len(labels) == 1 else None


class XdistHooks:
    """Registered only when pytest-xdist is present."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels  # each image's battery has its label for node id

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        labels = self.labels

        class ImageScheduling(LoadScopeScheduling):  # type: ignore[misc]
            def _split_scope(self, nodeid: str) -> str:
                # The author's tests that use the model go with its image; others by module.
                return image_of(nodeid, labels) or str(super()._split_scope(nodeid))

        return ImageScheduling(config, log)
