"""The gRPC foundations: the wire messages, the client against throwaway in-process servers,
and the gRPC sample images through the client."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import yaml
from google.protobuf import descriptor_pool

from harness import cases, grpcwire
from harness.grpcclient import MESSAGE_CEILING, GrpcModelClient
from harness.http import Outcome
from sample_models import build
from tests import expect, runs
from tests.containers import Running, started
from tests.harness_api import EXIT_NOT_EVALUATED
from tests.harness_runs import HarnessRuns
from tests.resources import Resources

# -- the wire format ---------------------------------------------------------------------------

# Field numbers of the public model.proto (chassisml/chassis), written out independently of
# harness/grpcwire.py: a renumbering there must fail here.
PUBLIC_NUMBERS = {
    "ModelInfo": {"model_name": 1, "model_version": 2, "model_author": 3, "model_type": 4, "source": 5},
    "ModelDescription": {"summary": 1, "details": 2, "technical": 3, "performance": 4},
    "ModelInput": {"filename": 1, "accepted_media_types": 2, "max_size": 3, "description": 4},
    "ModelOutput": {"filename": 1, "media_type": 2, "max_size": 3, "description": 4},
    "ModelResources": {"required_ram": 1, "num_cpus": 2, "num_gpus": 3},
    "ModelTimeout": {"status": 1, "run": 2},
    "ModelFeatures": {
        "adversarial_defense": 1,
        "batch_size": 2,
        "retrainable": 3,
        "results_format": 4,
        "drift_format": 5,
        "explanation_format": 6,
    },
    "StatusRequest": {},
    "StatusResponse": {
        "status_code": 1,
        "status": 2,
        "message": 3,
        "model_info": 4,
        "description": 5,
        "inputs": 6,
        "outputs": 7,
        "resources": 8,
        "timeout": 9,
        "features": 10,
    },
    "InputItem": {"input": 1},
    "RunRequest": {"inputs": 1, "detect_drift": 2, "explain": 3},
    "OutputItem": {"output": 1, "success": 2},
    "RunResponse": {"status_code": 1, "status": 2, "message": 3, "outputs": 4},
    "ShutdownRequest": {},
    "ShutdownResponse": {"status_code": 1, "status": 2, "message": 3},
}


def test_every_message_has_the_public_field_numbers() -> None:
    for name, numbers in PUBLIC_NUMBERS.items():
        descriptor = getattr(grpcwire, name).DESCRIPTOR
        assert descriptor.full_name == name  # no package: the wire paths are /ModzyModel/...
        assert {f.name: f.number for f in descriptor.fields} == numbers, name
    assert set(grpcwire.MESSAGES) == set(PUBLIC_NUMBERS)


def test_the_service_has_three_unary_methods_at_the_public_paths() -> None:
    service = grpcwire.RunRequest.DESCRIPTOR.file.services_by_name["ModzyModel"]
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "Status": ("StatusRequest", "StatusResponse"),
        "Run": ("RunRequest", "RunResponse"),
        "Shutdown": ("ShutdownRequest", "ShutdownResponse"),
    }
    assert not any(m.client_streaming or m.server_streaming for m in service.methods)
    assert list(grpcwire.ROUTES) == ["/ModzyModel/Status", "/ModzyModel/Run", "/ModzyModel/Shutdown"]


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    """A field as protobuf encodes it, for payloads and lengths under 128 bytes."""
    tag = bytes([number << 3 | wire_type])
    return tag + (bytes([len(payload)]) + payload if wire_type == 2 else payload)


def test_a_run_request_is_encoded_as_the_public_proto_encodes_it() -> None:
    request = grpcwire.run_request([{"input.txt": b"hi"}], explain=True)
    entry = _field(1, 2, b"input.txt") + _field(2, 2, b"hi")  # map entry: key 1, value 2
    item = _field(1, 2, entry)  # InputItem.input = 1
    assert request.SerializeToString() == _field(1, 2, item) + _field(3, 0, b"\x01")  # explain = 3


def test_a_status_response_round_trips_with_every_field() -> None:
    sent = grpcwire.StatusResponse(
        status_code=200,
        status="OK",
        message="ready",
        model_info=grpcwire.ModelInfo(model_name="m", model_version="1.0.0", model_type="grpc"),
        description=grpcwire.ModelDescription(summary="s"),
        inputs=[
            grpcwire.ModelInput(filename="input.txt", accepted_media_types=["text/plain"], max_size="1M")
        ],
        outputs=[grpcwire.ModelOutput(filename="results.json", media_type="application/json")],
        resources=grpcwire.ModelResources(required_ram="256M", num_cpus=0.5, num_gpus=1),
        timeout=grpcwire.ModelTimeout(status="20s", run="20s"),
        features=grpcwire.ModelFeatures(batch_size=4, drift_format="x"),
    )
    received = grpcwire.StatusResponse.FromString(sent.SerializeToString())
    assert received == sent
    assert received.features.batch_size == 4 and received.resources.num_cpus == 0.5
    assert _field(1, 0, b"\xc8\x01") in sent.SerializeToString()  # status_code 200 as field 1, a varint


def test_a_run_response_keeps_order_and_the_error_key() -> None:
    sent = grpcwire.RunResponse(status_code=200, status="OK", message="done")
    sent.outputs.append(grpcwire.output_item({"results.json": b"{}"}))
    sent.outputs.append(grpcwire.output_item(error="input text is empty"))
    received = grpcwire.RunResponse.FromString(sent.SerializeToString())
    assert [(o.success, dict(o.output)) for o in received.outputs] == [
        (True, {"results.json": b"{}"}),
        (False, {grpcwire.ERROR_KEY: b"input text is empty"}),
    ]


def test_the_messages_live_in_a_pool_of_their_own() -> None:
    # Another module of the process may define the same unqualified names.
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("RunRequest")


# -- the client, against throwaway servers -------------------------------------------------------

Handler = Callable[[Any, Any], Any]


@contextmanager
def grpc_server(**handlers: Handler) -> Iterator[int]:
    """An in-process ModzyModel server with the given methods; yields its port."""
    methods = {
        name: grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=grpcwire.ROUTES[f"/ModzyModel/{name}"][0].FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )
        for name, handler in handlers.items()
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.max_send_message_length", 8 * 2**20)]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("ModzyModel", methods),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait(5)


def ready(_request: Any, _context: Any) -> Any:
    return grpcwire.StatusResponse(status_code=200, status="OK", message="ready")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_is_answered_and_decoded() -> None:
    with grpc_server(Status=ready) as port:
        exchange = GrpcModelClient("127.0.0.1", port).status(timeout=5)
    assert (exchange.outcome, exchange.code, exchange.connected) == (Outcome.ANSWERED, "OK", True)
    assert exchange.answered and exchange.ok and exchange.status_code == 200
    assert exchange.message.message == "ready"
    assert exchange.route == "/ModzyModel/Status"
    assert exchange.summary() == "status_code 200, status 'OK', message 'ready'"


def test_run_sends_the_items_in_order_with_the_flags() -> None:
    seen: list[Any] = []

    def run(request: Any, _context: Any) -> Any:
        seen.append(request)
        response = grpcwire.RunResponse(status_code=200, status="OK")
        for item in request.inputs:
            response.outputs.append(grpcwire.output_item({"echo": item.input["input.txt"]}))
        return response

    items = [{"input.txt": str(i).encode()} for i in range(5)]
    with grpc_server(Run=run) as port:
        exchange = GrpcModelClient("127.0.0.1", port).run(items, timeout=5, detect_drift=True)
    assert exchange.ok and exchange.route == "/ModzyModel/Run"
    assert [o.output["echo"] for o in exchange.message.outputs] == [b"0", b"1", b"2", b"3", b"4"]
    assert (seen[0].detect_drift, seen[0].explain) == (True, False)
    assert exchange.summary().endswith("5 output item(s)")


def test_a_call_ends_by_its_deadline_whatever_the_server_does() -> None:
    release = threading.Event()

    def hang(_request: Any, _context: Any) -> Any:
        release.wait(30)
        return grpcwire.RunResponse()

    with grpc_server(Run=hang) as port:
        try:
            exchange = GrpcModelClient("127.0.0.1", port).run([{"input.txt": b"x"}], timeout=0.5)
        finally:
            release.set()
    assert (exchange.outcome, exchange.code, exchange.connected) == (
        Outcome.TIMED_OUT,
        "DEADLINE_EXCEEDED",
        True,
    )
    assert 0.5 <= exchange.seconds < 2.0
    assert exchange.summary() == "no whole answer (timed out: no answer by the deadline)"


def test_a_port_where_nothing_listens_is_refused_at_once() -> None:
    exchange = GrpcModelClient("127.0.0.1", free_port()).status(timeout=10)
    assert (exchange.outcome, exchange.code, exchange.connected) == (Outcome.REFUSED, "UNAVAILABLE", False)
    assert exchange.seconds < 2.0  # not the whole deadline: the call does not wait for a connection
    assert "refused" in exchange.summary().lower()


def test_a_connection_closed_mid_call_is_dropped() -> None:
    """A server that speaks HTTP/2 (its SETTINGS), reads the call, and closes the connection."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame
                received = b""
                while b"/ModzyModel/Status" not in received and len(received) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    received += chunk

        thread = threading.Thread(target=serve)
        thread.start()
        exchange = GrpcModelClient("127.0.0.1", listener.getsockname()[1]).status(timeout=5)
        thread.join(5)
    assert (exchange.outcome, exchange.code, exchange.connected) == (Outcome.DROPPED, "UNAVAILABLE", True)
    assert exchange.seconds < 4.0


def test_an_answer_over_the_receive_limit_is_not_held() -> None:
    def big(_request: Any, _context: Any) -> Any:
        return grpcwire.StatusResponse(status_code=200, message="x" * (2 * 2**20))

    with grpc_server(Status=big) as port:
        small = GrpcModelClient("127.0.0.1", port, max_receive_bytes=2**20).status(timeout=5)
        large = GrpcModelClient("127.0.0.1", port, max_receive_bytes=4 * 2**20).status(timeout=5)
    assert (small.outcome, small.code, small.message) == (Outcome.FAILED, "RESOURCE_EXHAUSTED", None)
    assert "over the client's limits" in small.detail and small.connected
    assert large.ok and len(large.message.message) == 2 * 2**20


def test_a_request_over_the_send_limit_never_leaves() -> None:
    calls: list[Any] = []

    def run(request: Any, _context: Any) -> Any:
        calls.append(request)
        return grpcwire.RunResponse(status_code=200)

    with grpc_server(Run=run) as port:
        client = GrpcModelClient("127.0.0.1", port, max_send_bytes=2**20)
        exchange = client.run([{"input.txt": b"x" * (2 * 2**20)}], timeout=5)
    assert (exchange.outcome, exchange.code) == (Outcome.FAILED, "RESOURCE_EXHAUSTED")
    assert calls == []


def test_a_status_the_server_sends_is_an_answer_that_is_not_ok() -> None:
    def broken(_request: Any, _context: Any) -> Any:
        raise RuntimeError("the handler failed")

    with grpc_server(Status=broken) as port:
        failed = GrpcModelClient("127.0.0.1", port).status(timeout=5)
        missing = GrpcModelClient("127.0.0.1", port).shutdown(timeout=5)
    assert (failed.outcome, failed.code, failed.ok) == (Outcome.ANSWERED, "UNKNOWN", False)
    assert failed.summary().startswith("gRPC status UNKNOWN")
    assert (missing.outcome, missing.code) == (Outcome.ANSWERED, "UNIMPLEMENTED")
    assert failed.status_code is None


def test_limits_are_bounded() -> None:
    with pytest.raises(ValueError, match="max_receive_bytes"):
        GrpcModelClient("127.0.0.1", 1, max_receive_bytes=MESSAGE_CEILING + 1)
    with pytest.raises(ValueError, match="max_send_bytes"):
        GrpcModelClient("127.0.0.1", 1, max_send_bytes=0)


def test_calls_leave_no_thread_behind() -> None:
    with grpc_server(Status=ready) as port:
        client = GrpcModelClient("127.0.0.1", port)
        client.status(timeout=5)  # the server's own threads start here
        before = set(threading.enumerate())
        for _ in range(5):
            assert client.status(timeout=5).ok
        assert not GrpcModelClient("127.0.0.1", free_port()).status(timeout=5).answered
        time.sleep(0.2)
        assert set(threading.enumerate()) <= before


# -- the gRPC sample images ------------------------------------------------------------------------

GRPC_DIR = build.HERE / "grpc_langid"
DATA = GRPC_DIR / "data"
METADATA = yaml.safe_load((GRPC_DIR / "model.yaml").read_text())
(INPUT_NAME,) = METADATA["inputs"]
(OUTPUT_NAME,) = METADATA["outputs"]


def case_input(case: Path) -> bytes:
    (source,) = [p for p in case.iterdir() if p.name in (INPUT_NAME, INPUT_NAME.rsplit(".", 1)[0])]
    return source.read_bytes()


EXAMPLES = sorted((DATA / "examples").iterdir())
VALIDATION_ERRORS = sorted((DATA / "validation-error").iterdir())


@contextmanager
def grpc_sample(
    name: str, docker_client: docker.DockerClient, resources: Resources, owner: str
) -> Iterator[tuple[Running, GrpcModelClient]]:
    with started(docker_client, resources.sample(name), owner=owner) as running:
        assert running.url, running.container.logs().decode()
        host, port = running.url.removeprefix("http://").rsplit(":", 1)
        yield running, GrpcModelClient(host, int(port))


def first_status(client: GrpcModelClient, running: Running) -> Any:
    return first_answer(lambda: client.status(timeout=2), running)


def first_answer(call: Callable[[], Any], running: Running, timeout: float = 20.0) -> Any:
    """The first answered exchange of ``call``, repeated while the server is not listening yet."""
    deadline = time.monotonic() + timeout
    while True:
        exchange = call()
        if exchange.answered:
            return exchange
        running.container.reload()
        assert running.container.status in ("created", "running"), running.container.logs().decode()
        assert time.monotonic() < deadline, f"Status not answered within {timeout} s: {exchange.summary()}"
        time.sleep(0.05)


@pytest.mark.docker
def test_grpc_sample_conforms(
    docker_client: docker.DockerClient, resources: Resources, session_token: str
) -> None:
    with grpc_sample("grpc-langid", docker_client, resources, session_token) as (running, client):
        # Run before any Status, once the server answers (an empty batch loads nothing):
        # the model is not loaded yet, and the item says so.
        first_answer(lambda: client.run([], timeout=2), running)
        before = client.run([{INPUT_NAME: case_input(EXAMPLES[0])}], timeout=10)
        assert before.ok and not before.message.outputs[0].success, before.message
        status = first_status(client, running)
        assert status.ok and status.status_code == 200, status.summary()
        described = status.message
        assert described.model_info.model_type == "grpc"
        assert described.features.batch_size == METADATA["features"]["maxBatchSize"]
        assert [i.filename for i in described.inputs] == [INPUT_NAME]
        assert [(o.filename, o.media_type) for o in described.outputs] == [(OUTPUT_NAME, "application/json")]
        assert (described.timeout.status, described.resources.required_ram) == ("20s", "256M")

        # One item, then every example in one batch: each output is its own item's.
        singles = []
        for case in EXAMPLES:
            exchange = client.run([{INPUT_NAME: case_input(case)}], timeout=10)
            assert exchange.ok and exchange.status_code == 200, exchange.summary()
            (item,) = exchange.message.outputs
            assert item.success, dict(item.output)
            expected = json.loads((case / "results.json").read_text())
            assert json.loads(item.output[OUTPUT_NAME]) == expected, case.name
            singles.append(dict(item.output))
        batch = client.run([{INPUT_NAME: case_input(case)} for case in EXAMPLES], timeout=10)
        assert batch.ok and [dict(o.output) for o in batch.message.outputs] == singles

        # A batch mixing bad and good items: each bad one fails alone, with its message.
        mixed = [EXAMPLES[0], *VALIDATION_ERRORS, EXAMPLES[1]]
        exchange = client.run([{INPUT_NAME: case_input(case)} for case in mixed], timeout=10)
        outputs = exchange.message.outputs
        assert [o.success for o in outputs] == [True, *[False] * len(VALIDATION_ERRORS), True]
        assert dict(outputs[0].output) == singles[0] and dict(outputs[-1].output) == singles[1]
        for case, output in zip(VALIDATION_ERRORS, outputs[1:-1], strict=True):
            message = (case / "message.txt").read_text().strip()
            assert message in output.output[grpcwire.ERROR_KEY].decode(), case.name

        shutdown = client.shutdown(timeout=10)
        assert shutdown.ok and shutdown.status_code == 200, shutdown.summary()
        assert running.wait_exit(15) == 0, running.container.logs().decode()


@pytest.mark.docker
def test_rebuilding_the_grpc_sample_changes_nothing(
    docker_client: docker.DockerClient, resources: Resources
) -> None:
    resources.sample("grpc-langid")
    again = build.build_all(docker_client, ["grpc-langid"])  # its context is assembled anew
    assert again["grpc-langid"].id == resources.sample_ids["grpc-langid"]


@pytest.mark.docker
def test_grpc_broken_samples_break_one_thing_each(
    docker_client: docker.DockerClient, resources: Resources, session_token: str
) -> None:
    english, french = (case_input(c) for c in EXAMPLES[:2])
    with grpc_sample("grpc-broken-status-500", docker_client, resources, session_token) as (running, client):
        status = first_status(client, running)
        assert status.ok and status.status_code == 500 and "failed to load" in status.message.message

    with grpc_sample("grpc-broken-batch-order", docker_client, resources, session_token) as (running, client):
        assert first_status(client, running).status_code == 200
        one = client.run([{INPUT_NAME: english}], timeout=10).message.outputs[0]
        batch = client.run([{INPUT_NAME: english}, {INPUT_NAME: french}], timeout=10).message.outputs
        assert batch[1] == one and batch[0] != one  # the outputs one place off

    for name, code in (("grpc-broken-shutdown-143", 143), ("grpc-broken-never-exits", None)):
        with grpc_sample(name, docker_client, resources, session_token) as (running, client):
            assert first_status(client, running).status_code == 200
            assert client.run([{INPUT_NAME: english}], timeout=10).message.outputs[0].success
            assert client.shutdown(timeout=10).status_code == 200
            assert running.wait_exit(5 if code is None else 15) == code, name


def test_every_grpc_sample_is_exercised_here() -> None:
    # The HTTP samples' lists (tests/test_plugin.py, tests/test_engines.py) read build.HTTP_SAMPLES.
    assert {s.name for s in build.GRPC_SAMPLES} == {
        "grpc-langid",
        "grpc-broken-status-500",
        "grpc-broken-batch-order",
        "grpc-broken-shutdown-143",
        "grpc-broken-never-exits",
        "grpc-shutdown-drops",
    }
    assert set(GRPC_FAILURES) | {"grpc-langid", "grpc-shutdown-drops"} == {s.name for s in build.GRPC_SAMPLES}
    assert set(build.SAMPLES) == set(build.HTTP_SAMPLES) | set(build.GRPC_SAMPLES)


# -- the gRPC battery, through the harness ----------------------------------------------------

GRPC_CHECKS = {
    "image.model-yaml",
    "image.default-command",
    "status.ready",
    "status.metadata",
    "image.port-env",
    *(f"run.example[{case}]" for case in expect.EXAMPLES),
    *(f"run.validation-error[{case}]" for case in expect.VALIDATION_ERRORS),
    "run.batch",
    "run.mixed-batch",
    "run.max-size",
    "run.flags",
    "shutdown.response",
    "shutdown.exit-code",
}
# What each broken gRPC sample must fail, and a phrase of its message that names the defect.
GRPC_FAILURES = {
    "grpc-broken-status-500": {"status.ready": "status_code 500"},
    # A batch answered out of order: the plain batch and the mixed one both see it.
    "grpc-broken-batch-order": {"run.batch": "item 0", "run.mixed-batch": "item 1"},
    "grpc-broken-shutdown-143": {"shutdown.exit-code": "exit code 143 (128 + 15"},
    "grpc-broken-never-exits": {"shutdown.exit-code": "still running; killed"},
}


def test_the_grpc_battery_is_declared_on_its_own_registry() -> None:
    from harness import grpcchecks

    ids = [check.id for check in grpcchecks.battery(cases.discover(DATA).cases)]
    assert set(ids) == GRPC_CHECKS
    assert ids[-2:] == ["shutdown.response", "shutdown.exit-code"]
    contract = (build.ROOT / "harness" / "contract.md").read_text()
    for check in grpcchecks.battery(None, strict=True):
        assert f'<a id="{check.rule}"></a>' in contract, check.rule


@pytest.mark.harness(runs.GRPC_RUNS["grpc-langid"], runs.GRPC_FROM_TAR)
@pytest.mark.parametrize("run", ["grpc-langid", "grpc-langid-tar"])
def test_the_grpc_sample_passes_every_grpc_check_by_tag_and_from_a_tar(
    harness: HarnessRuns, run: str
) -> None:
    result = harness(runs.GRPC_RUNS["grpc-langid"] if run == "grpc-langid" else runs.GRPC_FROM_TAR)
    assert result.returncode == 0, result
    assert result.outcomes() == dict.fromkeys(GRPC_CHECKS, "passed")
    assert result.json["verdict"] == "conformant"
    assert result.json["image"]["source"] == ("tag" if run == "grpc-langid" else "tar")
    # The evidence of a gRPC check is its call, shown as the HTML shows an HTTP exchange.
    assert result.report_dir is not None
    page = (result.report_dir / "conformance.html").read_text()
    assert "POST /ModzyModel/Status \\n\\u2192 200" in page
    assert "status_code: 200" in page
    steps = [step["stepName"] for step in result.json["loadSteps"]]
    assert steps[-1] == "Ready", steps


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.harness(runs.GRPC_RUNS[name])) for name in sorted(GRPC_FAILURES)],
)
def test_each_broken_grpc_sample_fails_exactly_its_checks(harness: HarnessRuns, name: str) -> None:
    result = harness(runs.GRPC_RUNS[name])
    assert result.returncode == 1, result
    failed = {check_id for check_id, outcome in result.outcomes().items() if outcome == "failed"}
    assert failed == set(GRPC_FAILURES[name]), result
    for check_id, phrase in GRPC_FAILURES[name].items():
        assert phrase in result.checks()[check_id]["message"], result.checks()[check_id]
    assert result.with_outcome("error") == set()


@pytest.mark.harness(runs.GRPC_RUNS["grpc-shutdown-drops"])
def test_a_grpc_model_that_drops_the_connection_on_shutdown_and_exits_0_conforms(
    harness: HarnessRuns,
) -> None:
    result = harness(runs.GRPC_RUNS["grpc-shutdown-drops"])
    assert result.returncode == 0, result
    assert result.outcomes() == dict.fromkeys(GRPC_CHECKS, "passed")
    assert result.checks()["shutdown.response"]["answer"] == "dropped"


@pytest.mark.harness(runs.GRPC_NO_MODEL_YAML)
def test_without_model_yaml_the_status_answer_gives_the_metadata(harness: HarnessRuns) -> None:
    result = harness(runs.GRPC_NO_MODEL_YAML)
    assert result.returncode == 0, result
    outcomes = result.outcomes()
    assert {c for c, o in outcomes.items() if o == "skipped"} == {"image.model-yaml", "status.metadata"}, (
        outcomes
    )
    assert all(outcomes[c] == "passed" for c in GRPC_CHECKS - {"image.model-yaml", "status.metadata"}), (
        outcomes
    )
    assert (
        "the battery uses the Status answer's metadata (inputs ['input.txt']"
        in (result.checks()["status.metadata"]["message"])
    )


@pytest.mark.harness(runs.GRPC_AUTHOR)
def test_an_authors_own_tests_reach_a_grpc_model_through_the_fixture(harness: HarnessRuns) -> None:
    result = harness(runs.GRPC_AUTHOR)
    assert result.returncode == 0, result
    assert "test_author.py::test_status_through_the_transport PASSED" in result.stdout, result
    assert "test_author.py::test_a_run_through_the_transport PASSED" in result.stdout, result


@pytest.mark.harness(runs.GRPC_AS_HTTP, runs.HTTP_AS_GRPC)
@pytest.mark.parametrize(
    ("run", "says"),
    [("grpc-as-http", "--model-protocol grpc"), ("http-as-grpc", "without --model-protocol grpc")],
)
def test_the_wrong_variant_is_one_line_and_not_evaluated(harness: HarnessRuns, run: str, says: str) -> None:
    result = harness(runs.GRPC_AS_HTTP if run == "grpc-as-http" else runs.HTTP_AS_GRPC)
    assert result.returncode == EXIT_NOT_EVALUATED, result
    assert says in result.stdout, result
