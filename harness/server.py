"""What an author's own tests get of the model under test (the ``model_server`` fixture).

A small facade over the run: it keeps what authors' tests need, so that the harness's
inside (the run, its container, its engine) can move without breaking a ``conftest.py``.
Knows nothing of pytest.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .http import Exchange
from .jobs import JobResult
from .metadata import ModelMetadata
from .transport import Transport

if TYPE_CHECKING:
    from .run import ImageRun


class ModelServer:
    """The started, ready model: its declarations, its address, requests and jobs."""

    def __init__(self, run: ImageRun) -> None:
        self._run = run

    @property
    def label(self) -> str:
        """How the image is named in check ids and reports (its reference, or the TAR's name)."""
        return self._run.label

    @property
    def metadata(self) -> ModelMetadata | None:
        """The model's ``model.yaml`` as the harness read it (None without one)."""
        return self._run.metadata

    @property
    def address(self) -> str:
        """Where the model's port is reached, ``host:port``."""
        return self._client().address

    @property
    def container_id(self) -> str:
        """The model's container in the engine the run uses (to inspect it, say)."""
        container_id = self._run.require_ready().container_id
        assert container_id is not None
        return container_id

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Exchange:
        """One HTTP exchange with the model (default timeout: the run timeout), bounded as the
        battery's are: its ``status``, ``headers``, ``body`` and ``json()``. The HTTP contract's
        only (gRPC: ``transport``)."""
        return self._run.traffic.request(method, path, body=body, headers=headers, timeout=timeout)

    def run_job(
        self, inputs: Mapping[str, bytes | Path], *, payload: dict[str, object] | None = None
    ) -> JobResult:
        """POST /run on these input files (name -> content or file): the exchange and the outputs."""
        return self._run.traffic.run_job(inputs, name="author", payload=payload)

    @property
    def transport(self) -> Transport:
        """The model's own client: ``harness.http.ModelClient``, or for the gRPC variant
        ``harness.grpcclient.GrpcModelClient`` (its ``status``, ``run`` and ``shutdown`` calls)."""
        return self._client()

    def _client(self) -> Transport:
        transport = self._run.require_ready().transport
        assert transport is not None
        return transport
