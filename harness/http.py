"""HTTP exchanges with the model, kept as evidence for the checks and the reports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests
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
        return f"{self.status} {self.headers.get('Content-Type', '(no Content-Type)')} {excerpt!r}"


class ModelClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
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
                kept = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    if len(kept) < BODY_CAP:
                        kept += chunk
                    else:
                        exchange.body_truncated = True
                        break
                exchange.body = bytes(kept[:BODY_CAP])
                exchange.body_truncated = exchange.body_truncated or len(kept) > BODY_CAP
        except requests.RequestException as exc:
            exchange.error = _describe(exc)
        exchange.seconds = time.monotonic() - started
        self.history.append(exchange)
        return exchange

    def post_json(self, path: str, payload: object, *, timeout: float) -> Exchange:
        body = json.dumps(payload).encode()
        return self.request(
            "POST", path, body=body, headers={"Content-Type": "application/json"}, timeout=timeout
        )


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
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
