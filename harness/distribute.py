"""Under pytest-xdist: one image, one worker, one container, whatever ``--dist`` says.

The harness's scheduler gives each worker whole images: every check of an image, and the
author's own tests that use it, go to the same worker, in collection order (/shutdown
last). Other tests are spread by module, as ``--dist loadscope`` would.
"""

from __future__ import annotations

from typing import Any

import pytest


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
                base = nodeid.split("::", 1)[0]
                if base in labels:
                    return base
                # The author's tests that use the model: parametrized by label, or the only image.
                params = nodeid.rpartition("[")[2]
                for label in labels:
                    if params.startswith(label):
                        return label
                if len(labels) == 1:
                    return labels[0]
                return str(super()._split_scope(nodeid))

        return ImageScheduling(config, log)
