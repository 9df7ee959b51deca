"""gRPC exchanges with the model: every call ends by its deadline, whatever the server does.

Plaintext HTTP/2, as the gRPC model contract serves it on ``$PSC_MODEL_PORT``. Each call
gets a channel of its own, closed when the call ends, as the HTTP client makes one
connection per request: what one exchange did to its connection never leaks into the
next, and whether that call reached the server is known (``connected``). The calls do not
wait for a channel to become ready: a port where nothing listens is ``refused`` at once,
as it is over HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import text_format

from . import grpcwire
from .http import Outcome, host_port

# Whole messages are held in memory, so both directions are bounded. 64 MiB is 16 times
# grpcio's default receive limit and holds a batch of a few dozen outputs of a megabyte
# each; a caller that must send or receive more (an input at a large declared maxSize)
# raises it, up to the ceiling: 256 MiB, which is also the most the HTTP side reads of an
# output, and just over the 250 MiB the vendor's template allows its server.
MESSAGE_LIMIT = 64 * 2**20
MESSAGE_CEILING = 256 * 2**20


@dataclass
class GrpcExchange:
    """One unary call: how it ended, the status the server (or the client library) gave,
    and the decoded answer when there was one."""

    route: str  # the wire path, "/ModzyModel/Run"
    request: Any  # the message sent
    outcome: Outcome = Outcome.FAILED
    code: str | None = None  # the gRPC status code's name ("OK", "DEADLINE_EXCEEDED", ...)
    details: str = ""  # the gRPC status details, as received or as the library wrote them
    message: Any = None  # the decoded answer, on status OK
    detail: str = ""  # why the exchange did not end in a whole answer
    seconds: float = 0.0
    connected: bool = False  # an HTTP/2 connection to the server was made

    @property
    def answered(self) -> bool:
        """A whole answer arrived: a message with status OK, or a status the server sent."""
        return self.outcome is Outcome.ANSWERED

    @property
    def ok(self) -> bool:
        return self.answered and self.code == "OK"

    @property
    def status_code(self) -> int | None:
        """The HTTP-like ``status_code`` inside the answer, when it has one."""
        if self.message is None or "status_code" not in self.message.DESCRIPTOR.fields_by_name:
            return None
        return int(self.message.status_code)

    @property
    def status(self) -> int | None:
        """What the readiness wait reads as the answer's status: the ``status_code`` of an OK
        answer, else None (no whole answer of the service)."""
        return self.status_code if self.ok else None

    def evidence_record(self, excerpt: int) -> dict[str, Any]:
        """The report's record of this call, in the fields of an HTTP exchange's: a gRPC call
        is a POST of its route over HTTP/2; the messages are shown in protobuf's text format."""
        request = text_format.MessageToString(self.request, as_one_line=True)
        answer = (
            text_format.MessageToString(self.message, as_one_line=True) if self.message is not None else ""
        )
        return {
            "method": "POST",
            "path": self.route,
            "requestBodyExcerpt": request[:excerpt],
            "status": self.status_code,
            "outcome": self.outcome.value,
            "headers": {"grpc-status": self.code or ""},
            "bodyExcerpt": answer[:excerpt] or self.details[:excerpt],
            "bodyBytes": self.message.ByteSize() if self.message is not None else 0,
            "bodyTruncated": len(answer) > excerpt,
            "error": None if self.answered else self.detail,
            "durationSeconds": round(self.seconds, 4),
        }

    def summary(self) -> str:
        """One line for a finding."""
        if not self.answered:
            return f"no whole answer ({self.outcome.value}: {self.detail})"
        if not self.ok:
            return f"gRPC status {self.code}: {self.details[:200]!r}"
        parts = [f"status_code {self.status_code}"]
        for name in ("status", "message"):
            if name in self.message.DESCRIPTOR.fields_by_name:
                parts.append(f"{name} {getattr(self.message, name)[:200]!r}")
        if self.route == grpcwire.RUN_PATH:
            parts.append(f"{len(self.message.outputs)} output item(s)")
        return ", ".join(parts)


def _reached(channel: grpc.Channel) -> bool:
    """Whether the channel holds a connection to the server now. Read from the channel's core
    object: the public ``subscribe`` costs a polling thread and 0.2 s to close per channel."""
    core = getattr(channel, "_channel", None)
    try:
        state = core.check_connectivity_state(False)  # type: ignore[union-attr]
    except (AttributeError, TypeError):
        return False  # another grpcio: the status details then tell (see _classify)
    return bool(state == grpc.ChannelConnectivity.READY.value[0])


class GrpcModelClient:
    """Unary calls to one model server's ``ModzyModel`` service."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_send_bytes: int = MESSAGE_LIMIT,
        max_receive_bytes: int = MESSAGE_LIMIT,
    ) -> None:
        for name, value in (("max_send_bytes", max_send_bytes), ("max_receive_bytes", max_receive_bytes)):
            if not 0 < value <= MESSAGE_CEILING:
                raise ValueError(f"{name} must be between 1 and {MESSAGE_CEILING} bytes, not {value}")
        self.host = host
        self.port = port
        self.max_send_bytes = max_send_bytes
        self.max_receive_bytes = max_receive_bytes

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    def status(self, *, timeout: float) -> GrpcExchange:
        return self.call(grpcwire.STATUS_PATH, grpcwire.StatusRequest(), timeout=timeout)

    def poll_status(self, *, timeout: float) -> GrpcExchange:
        return self.status(timeout=timeout)

    def run(
        self,
        items: list[dict[str, bytes]],
        *,
        timeout: float,
        detect_drift: bool = False,
        explain: bool = False,
    ) -> GrpcExchange:
        """``Run`` on a batch: ``items`` are the batch's items, each a map of input file name to bytes."""
        request = grpcwire.run_request(items, detect_drift=detect_drift, explain=explain)
        return self.call(grpcwire.RUN_PATH, request, timeout=timeout)

    def shutdown(self, *, timeout: float) -> GrpcExchange:
        return self.call(grpcwire.SHUTDOWN_PATH, grpcwire.ShutdownRequest(), timeout=timeout)

    def call(self, route: str, request: Any, *, timeout: float) -> GrpcExchange:
        """One unary call on ``route`` (a path of ``grpcwire.ROUTES``), over by ``timeout`` seconds."""
        _request_type, response_type = grpcwire.ROUTES[route]
        exchange = GrpcExchange(route, request)
        options = [
            ("grpc.max_send_message_length", self.max_send_bytes),
            ("grpc.max_receive_message_length", self.max_receive_bytes),
            ("grpc.enable_retries", 0),  # one attempt per exchange: what the model did, once
            ("grpc.enable_http_proxy", 0),  # the model is reached directly, never through a proxy
        ]
        started = time.monotonic()
        channel = grpc.insecure_channel(self.address, options=options)
        try:
            stub = channel.unary_unary(
                route,
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=response_type.FromString,
            )
            try:
                exchange.message = stub(request, timeout=max(timeout, 0.0), wait_for_ready=False)
                exchange.code = "OK"
            except grpc.RpcError as error:
                self._classify(exchange, error, _reached(channel))
            else:
                exchange.outcome = Outcome.ANSWERED
                exchange.connected = True
        finally:
            channel.close()
            exchange.seconds = time.monotonic() - started
        return exchange

    def _classify(self, exchange: GrpcExchange, error: Any, reached: bool) -> None:
        code: grpc.StatusCode = error.code()
        details = str(error.details() or "")
        exchange.code, exchange.details = code.name, details
        # A drop leaves the channel without its connection: the details tell it from a refusal.
        exchange.connected = reached or (
            code is not grpc.StatusCode.DEADLINE_EXCEEDED and "failed to connect" not in details.lower()
        )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            exchange.outcome = Outcome.TIMED_OUT
            exchange.detail = (
                "no answer by the deadline" if exchange.connected else "no connection by the deadline"
            )
        elif code is grpc.StatusCode.UNAVAILABLE and not exchange.connected:
            exchange.outcome, exchange.detail = Outcome.REFUSED, f"cannot connect: {details}"
        elif code is grpc.StatusCode.UNAVAILABLE:
            exchange.outcome, exchange.detail = Outcome.DROPPED, f"the connection closed: {details}"
        elif code is grpc.StatusCode.RESOURCE_EXHAUSTED and (
            "CLIENT:" in details or details.startswith("Sent message larger")
        ):
            # grpcio's own limits here, on what was sent or received: the message never
            # left or never arrived whole. (The server's own limit is a status it sends.)
            exchange.outcome = Outcome.FAILED
            exchange.detail = (
                f"a message over the client's limits ({self.max_send_bytes} bytes sent,"
                f" {self.max_receive_bytes} received): {details}"
            )
        elif code is grpc.StatusCode.INTERNAL and "deserializ" in details.lower():
            exchange.outcome = Outcome.FAILED
            exchange.detail = f"the answer is not a {exchange.route.rsplit('/', 1)[-1]} answer: {details}"
        elif code is grpc.StatusCode.CANCELLED:
            exchange.outcome, exchange.detail = Outcome.DROPPED, f"the call was cancelled: {details}"
        else:
            # A status the server sent (UNIMPLEMENTED, UNKNOWN for an exception in its handler, ...):
            # a whole answer, as an HTTP error status is.
            exchange.outcome = Outcome.ANSWERED
