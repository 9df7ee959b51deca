"""The transport seam: what the harness needs to speak to a model, whatever carries it.

The readiness wait and the shutdown ask through this Protocol, never through a socket of
their own. ``harness.http.ModelClient`` (HTTP over a published TCP port) and
``harness.grpcclient.GrpcModelClient`` (gRPC over HTTP/2) are its implementations; each
contract's checks speak its own transport's richer calls.
"""

from __future__ import annotations

from typing import Protocol

from .http import Outcome


class Answer(Protocol):
    """How one exchange ended, in the terms the readiness wait and the reports read."""

    @property
    def route(self) -> str: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def detail(self) -> str: ...  # why there was no whole answer
    @property
    def seconds(self) -> float: ...
    @property
    def status(self) -> int | None: ...  # the answer's status, None without one
    @property
    def answered(self) -> bool: ...
    @property
    def connected(self) -> bool: ...  # the server took the connection
    def summary(self) -> str: ...


class Transport(Protocol):
    """One model server, reached somewhere: each exchange ends by its deadline."""

    @property
    def address(self) -> str:
        """Where the model is reached (``host:port``), as the reports show it."""
        ...

    def poll_status(self, *, timeout: float) -> Answer:
        """Ask the model's status once (HTTP: GET /status; gRPC: Status)."""
        ...

    def shutdown(self, *, timeout: float) -> Answer:
        """Ask the model to shut down (HTTP: POST /shutdown; gRPC: Shutdown)."""
        ...
