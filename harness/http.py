"""HTTP exchanges with the model, kept as evidence for the checks and the reports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3.exceptions
from requests.structures import CaseInsensitiveDict

BODY_CAP = 1024 * 1024  # bytes of a response body kept; the rest is counted, not buffered


@dataclass
class Exchange:
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int | None = None
    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict)  # servers differ in case
    body: bytes = b""
    body_truncated: bool = False
    error: str | None = None  # the connection failed or dropped: no HTTP answer
    seconds: float = 0.0

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def media_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value is not None else None

    def json(self) -> Any:
        return json.loads(self.body)

    def summary(self) -> str:
        if self.error:
            return f"no answer ({self.error})"
        excerpt = self.body[:200].decode("utf-8", errors="replace")
        cut = f" [body cut at {len(self.body) // 1024} KiB]" if self.body_truncated else ""
        return f"{self.status} {self.headers.get('Content-Type', '(no Content-Type)')} {excerpt!r}{cut}"


class ModelClient:
    def __init__(self, base_url: str, body_cap: int = BODY_CAP) -> None:
        self.base_url = base_url
        self.body_cap = body_cap
        self._session = requests.Session()
        self._session.trust_env = False  # the model is on 127.0.0.1: never through a proxy
        self.history: list[Exchange] = []  # every exchange, as evidence for the checks

    def close(self) -> None:
        self._session.close()

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
        exchange = Exchange(method, path, dict(headers or {}), body)
        started = time.monotonic()
        try:
            with self._session.request(
                method,
                self.base_url + path,
                data=body or None,
                headers=headers,
                timeout=(min(connect_timeout, timeout), timeout),
                stream=True,
                allow_redirects=False,
            ) as response:
                exchange.status = response.status_code
                exchange.headers = CaseInsensitiveDict(response.headers)
                exchange.body, truncated = self._read_body(response, started + timeout)
                exchange.body_truncated = bool(truncated)
                if truncated is None:
                    exchange.error = f"timed out (the answer was still arriving after {timeout:.1f} s)"
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            # Reading the body raises urllib3's own errors (a stall, a connection cut mid-body).
            exchange.error = _describe(exc)
        exchange.seconds = time.monotonic() - started
        self.history.append(exchange)
        return exchange

    def _read_body(self, response: requests.Response, deadline: float) -> tuple[bytes, bool | None]:
        """At most ``body_cap`` bytes, by ``deadline``: (body, truncated), truncated None on time-out.

        Reads return as soon as any data is there, so that a body trickling in a byte at a
        time still meets the deadline; the rest of an oversized body is never buffered.
        """
        kept = bytearray()
        while True:
            if time.monotonic() > deadline:
                return bytes(kept), None
            chunk = response.raw.read1(64 * 1024)
            if not chunk:
                return bytes(kept), False
            kept += chunk
            if len(kept) > self.body_cap:
                return bytes(kept[: self.body_cap]), True

    def post_json(self, path: str, payload: object, *, timeout: float) -> Exchange:
        body = json.dumps(payload).encode()
        return self.request(
            "POST", path, body=body, headers={"Content-Type": "application/json"}, timeout=timeout
        )


def _describe(exc: Exception) -> str:
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection dropped (mid-answer)"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        for marker in ("RemoteDisconnected", "Connection reset", "Connection aborted", "Connection refused"):
            if marker in text:
                return (
                    f"connection dropped ({marker})"
                    if marker != "Connection refused"
                    else "connection refused"
                )
        return "connection failed"
    return type(exc).__name__
