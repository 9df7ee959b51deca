"""Unit tests of the core modules that need no Docker engine: real sockets where HTTP is involved."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import cases, checks, compare, envelope, metadata, rehearsal, units
from harness.errors import Nonconformance, SetupError
from harness.http import ModelClient, Outcome

MODEL_YAML = (Path(__file__).resolve().parent.parent / "sample_models" / "langid" / "model.yaml").read_text()


# -- the HTTP client: every exchange ends by its deadline -----------------------------------


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[socket.socket], None]], ModelClient]]:
    """A one-connection-at-a-time TCP server on loopback whose behaviour the test gives."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(behave: Callable[[socket.socket], None]) -> ModelClient:
        def loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(2)
                    try:
                        conn.recv(65536)
                        behave(conn)
                    except OSError:
                        pass  # the client gave up first: that is what these tests make it do

        threads.append(threading.Thread(target=loop, daemon=True))
        threads[-1].start()
        return ModelClient("127.0.0.1", listener.getsockname()[1])

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    listener.close()


def trickle(data: bytes, every: float, for_at_most: float = 3.0) -> Callable[[socket.socket], None]:
    def behave(conn: socket.socket) -> None:
        ends = time.monotonic() + for_at_most
        for byte in data:
            if time.monotonic() > ends:
                return
            conn.sendall(bytes([byte]))
            time.sleep(every)

    return behave


ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_a_whole_answer(server) -> None:  # type: ignore[no-untyped-def]
    client = server(lambda conn: conn.sendall(ANSWER))
    exchange = client.request("GET", "/status", timeout=2)
    assert (exchange.outcome, exchange.status, exchange.body, exchange.media_type) == (
        Outcome.ANSWERED,
        200,
        b"{}",
        "application/json",
    )
    assert exchange.request_headers["Accept-Encoding"] == "identity"  # never a compressed body


def test_headers_trickling_end_at_the_deadline(server) -> None:  # type: ignore[no-untyped-def]
    client = server(trickle(ANSWER, 0.2))  # about 18 s in all
    began = time.monotonic()
    exchange = client.request("GET", "/status", timeout=1.0)
    took = time.monotonic() - began
    assert exchange.outcome is Outcome.TIMED_OUT
    assert exchange.status is None
    assert "no status line and headers by the deadline" in exchange.detail
    assert took < 1.5, took


def test_a_body_trickling_past_the_deadline_keeps_its_status(server) -> None:  # type: ignore[no-untyped-def]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"

    def behave(conn: socket.socket) -> None:
        conn.sendall(head)
        trickle(b"x" * 100, 0.2)(conn)

    client = server(behave)
    began = time.monotonic()
    exchange = client.request("GET", "/status", timeout=1.0)
    assert time.monotonic() - began < 1.5
    assert exchange.outcome is Outcome.TIMED_OUT
    assert exchange.status == 200  # the status line did arrive
    assert "still arriving" in exchange.summary()


def test_refused_dropped_and_not_http(server) -> None:  # type: ignore[no-untyped-def]
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    refused = ModelClient("127.0.0.1", port).request("GET", "/", timeout=1)
    assert refused.outcome is Outcome.REFUSED and not refused.connected
    dropped = server(lambda conn: None).request("GET", "/", timeout=1)
    assert dropped.outcome is Outcome.DROPPED and dropped.connected  # reached, then dropped


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
def test_an_ipv6_host_is_bracketed_in_the_host_header() -> None:
    listener = socket.socket(socket.AF_INET6)
    try:
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 cannot be bound here")
    listener.listen(1)
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            received.append(conn.recv(65536))
            conn.sendall(ANSWER)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    exchange = ModelClient("::1", port).request("GET", "/status", timeout=5)
    thread.join(timeout=5)
    listener.close()
    assert exchange.status == 200
    assert f"Host: [::1]:{port}\r\n".encode() in received[0]


def test_not_http(server) -> None:  # type: ignore[no-untyped-def]
    exchange = server(lambda conn: conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")).request("GET", "/", timeout=1)
    assert exchange.outcome is Outcome.NOT_HTTP


def test_a_body_over_the_cap_is_cut(server) -> None:  # type: ignore[no-untyped-def]
    body = b"x" * 200_000
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    client = server(lambda conn: conn.sendall(head + body))
    client.body_cap = 1000
    exchange = client.request("GET", "/", timeout=2)
    assert exchange.outcome is Outcome.ANSWERED
    assert (len(exchange.body), exchange.body_truncated) == (1000, True)


def test_json_nested_too_deep_is_not_json(server) -> None:  # type: ignore[no-untyped-def]
    body = b"[" * 100_000 + b"]" * 100_000
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    exchange = server(lambda conn: conn.sendall(head + body)).request("GET", "/", timeout=2)
    with pytest.raises(ValueError, match="nested too deeply"):
        exchange.json()


# -- the envelope and its media type, every route's answer ------------------------------------


class EnvelopeRun:
    """What the envelope assertions use of a check's context: findings, and a model that answered."""

    def finding(self, route: str, expected: str, actual: str, rule: str) -> Nonconformance:
        return Nonconformance(route, expected, actual, rule)

    def same_root(self, reason: str) -> str:
        return reason

    def unanswered(self, exchange: object) -> tuple[str, None]:
        return "", None


def answer(status: int, body: object, *content_types: str) -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(data)}\r\n"
    head += "".join(f"Content-Type: {value}\r\n" for value in content_types)
    return head.encode() + b"\r\n" + data


def envelope_of(server, status: int, body: object, *content_types: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    reply = answer(status, body, *content_types)
    exchange = server(lambda conn: conn.sendall(reply)).request("GET", "/status", timeout=2)
    assert exchange.answered, exchange.summary()
    return envelope.require_json_envelope(EnvelopeRun(), exchange)  # type: ignore[arg-type]


def test_every_header_field_is_kept(server) -> None:  # type: ignore[no-untyped-def]
    reply = answer(200, {}, "text/html", "application/json")
    exchange = server(lambda conn: conn.sendall(reply)).request("GET", "/status", timeout=2)
    assert exchange.header_values("content-type") == ["text/html", "application/json"]
    assert exchange.header("Content-Type") == "text/html, application/json"  # as RFC 9110 joins them


def test_two_content_types_fail_the_json_rule(server) -> None:  # type: ignore[no-untyped-def]
    ok = {"statusCode": 200, "status": "OK", "message": "ready"}
    with pytest.raises(Nonconformance) as caught:
        envelope_of(server, 200, ok, "text/html; charset=utf-8", "application/json")
    assert caught.value.rule == "json"
    assert "2 Content-Type headers ('text/html; charset=utf-8', 'application/json')" in caught.value.actual


def test_status_code_must_be_a_json_integer(server) -> None:  # type: ignore[no-untyped-def]
    reply = b'{"statusCode": 200.0, "status": "OK", "message": "ready"}'
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(reply)}\r\n\r\n"
    exchange = server(lambda conn: conn.sendall(head.encode() + reply)).request("GET", "/", timeout=2)
    with pytest.raises(Nonconformance) as caught:
        envelope.require_json_envelope(EnvelopeRun(), exchange)  # type: ignore[arg-type]
    assert (caught.value.rule, caught.value.actual) == (
        "envelope",
        "statusCode 200.0, a number with a fraction or exponent",
    )


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (200, "OK"),
        (200, "ok"),
        (202, "Accepted"),
        (415, "Unsupported Media Type"),
        (422, "Unprocessable Entity"),  # Python up to 3.12, werkzeug
        (422, "Unprocessable Content"),  # Python 3.13, RFC 9110
        (414, "Request URI Too Long"),  # werkzeug; Python 3.11 says Request-URI Too Long
        (404, "NOT FOUND"),
        (299, "Whatever"),  # no registered phrase to hold it to
    ],
)
def test_known_reason_phrases_pass(server, status: int, phrase: str) -> None:  # type: ignore[no-untyped-def]
    body = {"statusCode": status, "status": phrase, "message": "m"}
    assert envelope_of(server, status, body, "application/json") == body


@pytest.mark.parametrize(("status", "phrase"), [(200, "Banana"), (200, "Ready"), (422, "Bad Request")])
def test_any_other_reason_phrase_fails(server, status: int, phrase: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Nonconformance) as caught:
        envelope_of(
            server, status, {"statusCode": status, "status": phrase, "message": "m"}, "application/json"
        )
    assert caught.value.rule == "envelope"
    assert caught.value.actual == f"status {phrase!r}"
    assert f"(the reason phrase of {status})" in caught.value.expected


# Ctrl-C as an answer is closed, the connection dropped before it came (as Docker's port proxy
# does while the model does not listen yet): Python raises it in whatever code runs next, and
# an answer left to its finalizer to close ran its close() there, where the exception is lost.
DROPPED_CTRL_C_SCRIPT = """
import http.client, os, signal, socket, sys, threading
from harness.http import ModelClient

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)

def drop():
    while True:
        listener.accept()[0].close()

threading.Thread(target=drop, daemon=True).start()
close = http.client.HTTPResponse.close

def signalling_close(self):
    os.kill(os.getpid(), signal.SIGINT)
    close(self)

http.client.HTTPResponse.close = signalling_close
try:
    exchange = ModelClient("127.0.0.1", listener.getsockname()[1]).request("GET", "/status", timeout=5)
except KeyboardInterrupt:
    print("interrupted")
    sys.exit(0)
print(f"the Ctrl-C was lost: {exchange.outcome.value}")
sys.exit(1)
"""


def test_a_ctrl_c_as_a_dropped_exchange_ends_is_raised() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", DROPPED_CTRL_C_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (result.returncode, result.stdout + result.stderr)
    assert "interrupted" in result.stdout


# -- test data as authors keep it -------------------------------------------------------------


def make(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def test_layouts_the_vendor_template_uses(tmp_path: Path) -> None:
    data = make(
        tmp_path,
        {
            "example/one/input.dat": "hello",
            "example/one/results": "{}",
            "validation-error/bad/input.txt": "",
            "validation-error/bad/message": "empty\n",
        },
    )
    found = cases.discover(data)
    assert [(c.kind, c.name) for c in found.cases] == [("examples", "one"), ("validation-error", "bad")]
    assert found.missing_kinds == []
    one, bad = found.cases
    assert cases.resolve_inputs(one, ("input.txt",), ("results.json",)) == {
        "input.txt": one.path / "input.dat"
    }
    assert cases.expected_outputs(one, ("results.json",), ("input.txt",)) == {
        "results.json": one.path / "results"
    }
    assert cases.expected_message(bad, ("input.txt",)) == "empty"


def test_ambiguous_files_are_an_error(tmp_path: Path) -> None:
    data = make(tmp_path, {"examples/one/image.png": "", "examples/one/image.jpg": ""})
    (case,) = cases.discover(data).cases
    with pytest.raises(SetupError, match=r"image\.jpg, image\.png could each be image"):
        cases.resolve_inputs(case, ("image",))


def test_one_case_name_under_two_layouts_is_refused(tmp_path: Path) -> None:
    data = make(tmp_path, {"examples/a/input.txt": "x", "example/a/input.txt": "y"})
    with pytest.raises(SetupError, match=r"examples/a/ and example/a/ are both the case 'a'"):
        cases.discover(data)


def test_a_fifo_in_the_test_data_is_refused_unopened(tmp_path: Path) -> None:
    data = make(tmp_path, {"examples/a/results.json": "{}", "examples/b/input/keep": "x"})
    os.mkfifo(data / "examples" / "a" / "input.txt")
    with pytest.raises(SetupError, match=r"case examples/a: input.txt is a FIFO, not a regular file"):
        cases.discover(data)  # returns at once: nothing opened the FIFO
    (data / "examples" / "a" / "input.txt").unlink()
    os.mkfifo(data / "examples" / "b" / "input" / "pipe")
    with pytest.raises(SetupError, match=r"case examples/b: input/pipe is a FIFO"):
        cases.discover(data)


def test_an_empty_expected_message_is_refused(tmp_path: Path) -> None:
    data = make(tmp_path, {"validation-error/bad/input.txt": "", "validation-error/bad/message.txt": " \n\t"})
    (case,) = cases.discover(data).cases
    with pytest.raises(SetupError, match=r"message\.txt is empty"):
        cases.expected_message(case, ("input.txt",))


def test_data_without_any_case_and_with_one_kind_only(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="holds no test case"):
        cases.discover(make(tmp_path / "a", {"notes.txt": ""}))
    found = cases.discover(make(tmp_path / "b", {"examples/one/input.txt": ""}))
    assert found.missing_kinds == ["validation-error"]


# -- model.yaml: every problem at once, bounded ---------------------------------------------


def test_model_yaml_problems_are_listed_with_their_fix() -> None:
    text = MODEL_YAML.replace("version: 1.0.0", "version: 0.1").replace("status: 20s", "status: soon")
    with pytest.raises(SetupError) as caught:
        metadata.parse_metadata(text, "model.yaml")
    message = str(caught.value)
    assert message.startswith("model.yaml has 2 problems: ")
    assert "version must be three numbers such as 1.0.0 (quote it in YAML" in message
    assert "timeout.status: must be a duration such as 20s or 5m, got 'soon'" in message


def test_a_billion_laughs_is_refused_small() -> None:
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        refs = ",".join([f"*a{level - 1}"] * 10)
        levels.append(f"a{level}: &a{level} [{refs}]")
    with pytest.raises(SetupError, match="expands to more than 10000 YAML nodes"):
        metadata.parse_metadata("\n".join(levels) + "\n", "bomb.yaml")


def test_input_names_must_be_file_names() -> None:
    with pytest.raises(SetupError, match="must be a file name, not a path"):
        metadata.parse_metadata(MODEL_YAML.replace("  input.txt:", "  ../etc/passwd:"), "model.yaml")


@pytest.mark.parametrize("text", ["99999999h", "25h"])
def test_durations_are_bounded(text: str) -> None:
    with pytest.raises(ValueError, match="at most 24h"):
        units.parse_duration(text)


# -- outputs compared as JSON; media types ------------------------------------------------------


def test_json_difference_names_where() -> None:
    expected = {"label": "negative", "scores": [0.1, 0.9]}
    assert compare.json_difference({"scores": [0.1, 0.9], "label": "negative"}, expected) is None
    assert compare.json_difference({"label": "neutral", "scores": [0.1, 0.9]}, expected) == (
        '$.label: expected "negative", got "neutral"'
    )
    assert compare.json_difference({"label": "negative", "scores": [0.1]}, expected) == (
        "$.scores: expected 2 items, got 1"
    )
    assert compare.json_difference({"x": True}, {"x": 1}) == "$.x: expected 1, got true"


def test_media_types() -> None:
    assert rehearsal.media_type_problem("application/json", json.dumps({"a": 1}).encode()) is None
    assert rehearsal.media_type_problem("application/json", b"language: en\n") == "it is not JSON"
    assert rehearsal.media_type_problem("text/plain", b"Bonjour") is None
    assert rehearsal.media_type_problem("image/png", b"Bonjour") == "its content is text/plain"
    assert rehearsal.media_type_problem("image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64) is None


def test_timeout_margins_warn() -> None:
    found = rehearsal.Rehearsal(2**28, 1.0, 1, rehearsal.Timing(20.0, 15.0), rehearsal.Timing(20.0, 1.0))
    warnings = found.warnings()
    assert any(w.startswith("ready after 15.0 s of the 20 s status timeout (25% left") for w in warnings)
    assert any("declares 1 GPU(s)" in w for w in warnings)
    assert not any("slowest" in w for w in warnings)


# -- the per-image time bound -------------------------------------------------------------------

BOUND_SCRIPT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a shell's background job
from harness import bound
from harness.collect import CheckItem

class Run:
    label = "slow:1"
    uploading = False
    def bound(self, run_checks):
        return 0.5
    def upload_seconds(self):
        return 0.0

item = object.__new__(CheckItem)  # only its run is read
item.run = Run()
stopped = []
timer = bound.TimeBound({}, stopped.append)
began = time.monotonic()
wrapper = timer.pytest_runtest_call(item)
next(wrapper)
try:
    time.sleep(30)  # a check that never ends by itself
except bound.BoundExceeded:
    print(f"stopped after {time.monotonic() - began:.1f} s: {stopped[0]}")
    sys.exit(0)
sys.exit(1)
"""


def test_the_bound_stops_a_check_even_with_sigint_ignored() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", BOUND_SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "slow:1 ran past its bound of 0 s and was stopped" in result.stdout
    seconds = float(result.stdout.split("after ")[1].split(" s")[0])
    assert seconds < 10, result.stdout


UPLOAD_SCRIPT = """
import sys, threading, time
from harness import bound
from harness.collect import CheckItem

class Run:
    label = "loading:1"
    uploading = True
    began = time.monotonic()
    def bound(self, run_checks):
        return 0.5
    def upload_seconds(self):  # uploading for its first 1.5 s
        return min(time.monotonic() - self.began, 1.5)

run = Run()
def upload_done():
    time.sleep(1.5)
    run.uploading = False
threading.Thread(target=upload_done, daemon=True).start()
item = object.__new__(CheckItem)
item.run = run
timer = bound.TimeBound({}, lambda why: None)
wrapper = timer.pytest_runtest_setup(item)
next(wrapper)
try:
    time.sleep(30)  # a preparation that hangs once its upload is done
except bound.BoundExceeded:
    print(f"stopped after {time.monotonic() - run.began:.1f} s")
    sys.exit(0)
sys.exit(1)
"""


def test_the_bound_covers_preparation_but_not_the_upload() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", UPLOAD_SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    seconds = float(result.stdout.split("after ")[1].split(" s")[0])
    assert 1.9 <= seconds < 10, result.stdout  # 1.5 s of upload not counted, then 0.5 s of bound


def test_the_exit_code_follows_the_verdict() -> None:
    from harness.session import exit_code

    ok, failed = pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED
    assert exit_code("conformant", ok) == 0
    assert exit_code("conformant", failed) == 1  # an author's own test failed
    assert exit_code("nonconformant", ok) == 1  # a finding pytest did not count is still one
    assert exit_code("incomplete", ok) == 2
    assert exit_code("incomplete", failed) == 1
    assert exit_code("error", failed) == 6


def test_xdist_scopes_match_an_image_label_whole() -> None:
    from harness.distribute import image_of

    labels = ["m:1", "m:10", "model.tar", "model.tar'"]
    assert image_of("m:10::status.ready", labels) == "m:10"
    assert image_of("test_mine.py::test_x[m:10]", labels) == "m:10"
    assert image_of("test_mine.py::test_x[m:1]", labels) == "m:1"
    assert image_of("test_mine.py::test_x[model.tar']", labels) == "model.tar'"
    assert image_of("test_mine.py::test_x[model.tar-fr]", labels) == "model.tar"
    assert image_of("test_mine.py::test_x[fr-m:10]", labels) == "m:10"
    assert image_of("test_mine.py::test_x[m:100]", labels) is None
    assert image_of("test_mine.py::test_plain", labels) is None
    assert image_of("test_mine.py::test_plain", ["only"]) == "only"


def test_every_rule_of_the_battery_is_an_anchor_of_the_contract() -> None:
    from harness.__main__ import contract_text

    for check in checks.battery(None, strict=True):
        assert contract_text(check.rule).strip(), check.id
    assert "405 Method Not Allowed" in contract_text("unknown-routes")


# A bound whose timer fires as its check ends: the timer's thread is held as it enters _fire,
# the check ends (the bound is cancelled), the session closes the bound, then the firing goes on.
CANCELLED_FIRING_SCRIPT = """
import sys, threading, time
from harness import bound
from harness.collect import CheckItem

class Run:
    label = "quick:1"
    uploading = False
    def bound(self, run_checks):
        return 0.0
    def upload_seconds(self):
        return 0.0

entered, go = threading.Event(), threading.Event()

def hold_in_fire(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "_fire":
        entered.set()
        go.wait(5)

item = object.__new__(CheckItem)  # only its run is read
item.run = Run()
timer = bound.TimeBound({}, lambda why: None)
threading.settrace(hold_in_fire)  # the timer's thread only: it is started now
wrapper = timer.pytest_runtest_call(item)
next(wrapper)
threading.settrace(None)
assert entered.wait(5)
threading.Timer(0.3, go.set).start()
try:
    try:
        wrapper.send(None)  # the check ends
    except StopIteration:
        pass
    timer.close()  # as the session does before it cleans up
    time.sleep(1.5)
except bound.BoundExceeded:
    print("signalled after it was cancelled")
    sys.exit(1)
print("no signal after the cancel")
"""


def test_a_cancelled_bound_never_signals() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", CANCELLED_FIRING_SCRIPT], capture_output=True, text=True, timeout=60
    )
    # Before: BoundExceeded after the cancel, or SIGUSR1's default action (death) after close().
    assert result.returncode == 0, (result.returncode, result.stdout + result.stderr)
    assert "no signal after the cancel" in result.stdout


# The bound fires while the main thread runs a finalizer, where its BoundExceeded is discarded
# (its signal held until then).
LOST_BOUND_SCRIPT = """
import io, signal, sys, time
from harness import bound
from harness.collect import CheckItem

class Run:
    label = "slow:1"
    uploading = False
    def bound(self, run_checks):
        return 0.0
    def upload_seconds(self):
        return 0.0

class Dropped(io.RawIOBase):
    def close(self):
        while signal.SIGUSR1 not in signal.sigpending():
            time.sleep(0.01)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})  # its handler runs here
        super().close()

item = object.__new__(CheckItem)
item.run = Run()
timer = bound.TimeBound({}, lambda why: None)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
wrapper = timer.pytest_runtest_call(item)
next(wrapper)
Dropped()
try:
    wrapper.send(None)
except StopIteration:
    print("the check ended as if within its bound")
    sys.exit(1)
except bound.BoundExceeded as exc:
    print(f"stopped: {exc}")
"""


def test_a_bound_whose_exception_is_lost_still_stops_its_check() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", LOST_BOUND_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (result.returncode, result.stdout + result.stderr)
    assert "stopped: slow:1 ran past its bound of 0 s and was stopped" in result.stdout


# -- a session's cleanup and signals ---------------------------------------------------------------

# A second Ctrl-C as the cleanup begins, while another thread of the run (an exit watcher)
# lives: blocking SIGINT in the main thread only hands the signal to that thread.
CLEANUP_SCRIPT = """
import os, signal, sys, threading, time
from harness import session

cleaned = []

class Run:
    def __init__(self, label):
        self.label, self.cleanup_problems = label, []
    def close(self):
        if not cleaned:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10000):  # Python runs its handler here, or never
                pass
        cleaned.append(self.label)

threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
state = object.__new__(session.HarnessSession)
state.runs = {"a": Run("a"), "b": Run("b")}
state.bound = None
state.interruption = session.Interruption()
try:
    state.close()
except KeyboardInterrupt:
    print(f"cleanup interrupted after {cleaned}")
    sys.exit(1)
print(f"cleaned {cleaned}")
"""


def test_a_signal_does_not_interrupt_the_cleanup() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", CLEANUP_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (result.returncode, result.stdout + result.stderr)
    assert "cleaned ['a', 'b']" in result.stdout
