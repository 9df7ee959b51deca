"""HTTP exchanges with the model: every one ends by its deadline, whatever the server sends.

The client speaks plain HTTP/1.1 over one connection per request. Every read from the
socket waits at most until the exchange's deadline, so a server that trickles its status
line, headers or body a byte at a time still ends on time; at most ``body_cap`` bytes of a
body are kept. It asks for no content coding (``Accept-Encoding: identity``), so a body is
never a compressed stream to decode.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import io
import json
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .transport import Transport

BODY_CAP = 1024 * 1024  # bytes of a response body kept; reading stops there
READ_SIZE = 64 * 1024


class Outcome(enum.Enum):
    """How an exchange ended."""

    ANSWERED = "answered"  # a whole answer arrived (its body perhaps cut at the cap)
    REFUSED = "refused"  # nothing listened on the port
    DROPPED = "dropped"  # the connection closed before the whole answer arrived
    TIMED_OUT = "timed out"  # the deadline passed before the whole answer arrived
    NOT_HTTP = "not HTTP"  # what came back could not be read as an HTTP answer
    FAILED = "failed"  # the connection could not be made for another reason


@dataclass
class Exchange:
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    outcome: Outcome = Outcome.FAILED
    status: int | None = None  # set once the status line arrived, even if the body then failed
    # Names in lower case; a repeated field's values joined by ", " (RFC 9110, section 5.3).
    headers: dict[str, str] = field(default_factory=dict)
    fields: list[tuple[str, str]] = field(default_factory=list)  # every field as received, in order
    body: bytes = b""
    body_truncated: bool = False
    detail: str = ""  # why an exchange did not end in a whole answer
    seconds: float = 0.0
    connected: bool = False  # the connection was made: whatever followed, the server was reached

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def answered(self) -> bool:
        return self.outcome is Outcome.ANSWERED

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_values(self, name: str) -> list[str]:
        """Each value a field of this name had, in order: a repeat a single field hides."""
        return [value for key, value in self.fields if key == name.lower()]

    @property
    def media_type(self) -> str | None:
        value = self.header("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value is not None else None

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON (or nested too deep to read)."""
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply to read") from None

    def summary(self) -> str:
        if not self.answered:
            status = f"{self.status} then " if self.status is not None else ""
            return f"{status}no whole answer ({self.outcome.value}: {self.detail})"
        excerpt = self.body[:200].decode("utf-8", errors="replace")
        cut = f" [body cut at {len(self.body) // 1024} KiB]" if self.body_truncated else ""
        return f"{self.status} {self.header('Content-Type') or '(no Content-Type)'} {excerpt!r}{cut}"


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:8080``), as a Host header and a URL write it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _DeadlinePassed(Exception):
    pass


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read waiting no longer than what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            raise _DeadlinePassed from None


class _Socket:
    """What http.client.HTTPResponse needs of a socket: a file to read the answer from."""

    def __init__(self, reader: _DeadlineReader) -> None:
        self._file = io.BufferedReader(reader, READ_SIZE)

    def makefile(self, _mode: str) -> Any:
        return self._file


class ModelClient:
    """Requests to one model server over HTTP: the harness's ``Transport`` (harness/transport.py)."""

    def __init__(self, host: str, port: int, body_cap: int = BODY_CAP) -> None:
        self.host = host
        self.port = port
        self.body_cap = body_cap

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    def poll_status(self, *, timeout: float) -> Exchange:
        return self.request("GET", "/status", timeout=timeout)

    def shutdown(self, *, timeout: float) -> Exchange:
        return self.request("POST", "/shutdown", timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        connect_timeout: float = 2.0,
    ) -> Exchange:
        sent = {
            "Host": self.address,
            "User-Agent": f"psc-model-harness/{__version__}",
            "Accept-Encoding": "identity",
            "Connection": "close",
            **(headers or {}),
        }
        if body or method in ("POST", "PUT"):
            sent["Content-Length"] = str(len(body))
        exchange = Exchange(method, path, sent, body)
        started = time.monotonic()
        self._exchange(exchange, started + timeout, min(connect_timeout, timeout))
        exchange.seconds = time.monotonic() - started
        return exchange

    def _exchange(self, exchange: Exchange, deadline: float, connect_timeout: float) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        except ConnectionRefusedError:
            exchange.outcome, exchange.detail = Outcome.REFUSED, "connection refused"
            return
        except TimeoutError:
            exchange.outcome, exchange.detail = Outcome.TIMED_OUT, "no connection within the timeout"
            return
        except OSError as exc:
            exchange.outcome, exchange.detail = Outcome.FAILED, f"cannot connect: {exc.strerror or exc}"
            return
        exchange.connected = True
        with sock:
            try:
                self._send(sock, exchange, deadline)
                self._receive(sock, exchange, deadline)
            except _DeadlinePassed:
                exchange.outcome = Outcome.TIMED_OUT
                exchange.detail = (
                    "the answer was still arriving at the deadline"
                    if exchange.status is not None
                    else "no status line and headers by the deadline"
                )
            except (http.client.IncompleteRead, ConnectionError, http.client.RemoteDisconnected) as exc:
                exchange.outcome = Outcome.DROPPED
                exchange.detail = (
                    "the connection closed mid-answer"
                    if exchange.status is not None
                    else f"the connection closed before an answer ({type(exc).__name__})"
                )
            except http.client.HTTPException as exc:
                exchange.outcome = Outcome.NOT_HTTP
                exchange.detail = f"{type(exc).__name__}: {str(exc)[:200]}"
            except OSError as exc:
                exchange.outcome, exchange.detail = Outcome.DROPPED, f"{exc.strerror or exc}"

    def _send(self, sock: socket.socket, exchange: Exchange, deadline: float) -> None:
        head = f"{exchange.method} {exchange.path} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in exchange.request_headers.items())
        left = deadline - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed
        sock.settimeout(left)  # the whole send, since Python 3.5
        try:
            sock.sendall(head.encode("latin-1") + b"\r\n" + exchange.request_body)
        except TimeoutError:
            raise _DeadlinePassed from None

    def _receive(self, sock: socket.socket, exchange: Exchange, deadline: float) -> None:
        response = http.client.HTTPResponse(_Socket(_DeadlineReader(sock, deadline)))  # type: ignore[arg-type]
        # Closed here, not left to its finalizer: a Ctrl-C handled while a finalizer runs is lost.
        with contextlib.closing(response):
            response.begin()
            exchange.status = response.status
            exchange.fields = [(name.lower(), value) for name, value in response.getheaders()]
            for name, value in exchange.fields:
                seen = exchange.headers.get(name)
                exchange.headers[name] = value if seen is None else f"{seen}, {value}"
            kept = bytearray()
            while True:
                chunk = response.read(READ_SIZE)
                if not chunk:
                    break
                kept += chunk
                if len(kept) > self.body_cap:
                    del kept[self.body_cap :]
                    exchange.body_truncated = True  # the rest is never read
                    break
        exchange.body = bytes(kept)
        exchange.outcome = Outcome.ANSWERED

    def post_json(self, path: str, payload: object, *, timeout: float) -> Exchange:
        body = json.dumps(payload).encode()
        return self.request(
            "POST", path, body=body, headers={"Content-Type": "application/json"}, timeout=timeout
        )


if TYPE_CHECKING:

    def _is_a_transport(client: ModelClient) -> Transport:
        return client  # mypy checks here that ModelClient keeps to the Protocol
