"""The transport seam: what the harness needs to speak to a model, whatever carries it.

The checks, the jobs and the readiness wait ask for exchanges through this Protocol, never
through a socket of their own; ``harness.http.ModelClient`` is its one implementation (HTTP
over a published TCP port), and the only module that speaks HTTP to the model.
"""

from __future__ import annotations

from typing import Protocol

from .http import Exchange


class Transport(Protocol):
    """One model server, reached somewhere: each exchange ends by its deadline."""

    @property
    def address(self) -> str:
        """Where the model is reached (``host:port`` for HTTP), as the reports show it."""
        ...

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Exchange:
        """One exchange, over by ``timeout`` seconds whatever the server sends."""
        ...

    def post_json(self, path: str, payload: object, *, timeout: float) -> Exchange:
        """POST ``payload`` as a JSON body (Content-Type: application/json)."""
        ...
