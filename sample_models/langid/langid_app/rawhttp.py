"""A tiny threaded HTTP server on raw sockets, for the one variant gunicorn cannot play.

hostile-slow-headers: GET /status sends its status line and headers one byte every
0.5 s, so that the whole answer takes minutes. POST /shutdown answers 202 and exits 0;
anything else answers 404, both at full speed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from http import HTTPStatus

SLOW_SECONDS_PER_BYTE = 0.5
PADDING = 240  # an extra header, so that the headers alone take minutes
MAX_HEAD = 64 * 1024


def answer(code: int, message: str, extra: str = "") -> tuple[bytes, bytes]:
    """The head (status line and headers) and the body of an envelope answer."""
    phrase = HTTPStatus(code).phrase
    body = (json.dumps({"statusCode": code, "status": phrase, "message": message}) + "\n").encode()
    head = (
        f"HTTP/1.1 {code} {phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        f"{extra}\r\n"
    ).encode()
    return head, body


def read_request(conn: socket.socket) -> tuple[str, str] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk or len(data) > MAX_HEAD:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    # Read the body too: closing with unread data would reset the connection.
    while len(rest) < min(length, 2**20):
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return parts[0], parts[1]


def handle(conn: socket.socket, peer: str) -> None:
    with conn:
        try:
            conn.settimeout(60)
            request = read_request(conn)
            if request is None:
                return
            method, path = request
            print(f"langid: {peer} {method} {path}", flush=True)
            if (method, path) == ("GET", "/status"):
                head, body = answer(200, "model is ready", extra=f"X-Slow: {'.' * PADDING}\r\n")
                conn.settimeout(None)
                for byte in head:
                    conn.sendall(bytes([byte]))
                    threading.Event().wait(SLOW_SECONDS_PER_BYTE)
                conn.sendall(body)
            elif (method, path) == ("POST", "/shutdown"):
                conn.sendall(b"".join(answer(202, "shutting down")))
                threading.Timer(0.1, os._exit, (0,)).start()
            else:
                conn.sendall(b"".join(answer(404, f"no route {method} {path}")))
        except OSError:
            pass  # the client went away


def serve(port: int) -> None:
    # As PID 1 the process would ignore SIGTERM without a handler.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with socket.create_server(("0.0.0.0", port), backlog=64) as server:
        print(f"langid: raw HTTP server on 0.0.0.0:{port} (sample defect: slow headers)", flush=True)
        while True:
            conn, (host, peer_port, *_) = server.accept()
            threading.Thread(target=handle, args=(conn, f"{host}:{peer_port}"), daemon=True).start()
