"""The battery: every conformance check, with a stable id and the part of SPEC.md it enforces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jsonschema

from . import cases as casedata
from .errors import CheckSkipped, Nonconformance
from .http import Exchange
from .metadata import schema
from .run import ImageRun

JSON = "application/json"


@dataclass(frozen=True)
class Check:
    id: str
    spec: str  # the part of SPEC.md it enforces
    summary: str
    needs_container: bool
    func: Callable[[ImageRun], None]


# -- shared assertions ---------------------------------------------------------------------


def fail(run: ImageRun, route: str, expected: str, actual: str, spec: str) -> Nonconformance:
    return Nonconformance(route, expected, actual, spec, log_tail=run.log_tail())


def require_answer(run: ImageRun, exchange: Exchange, spec: str) -> None:
    if exchange.error is not None:
        actual = exchange.summary()
        # A dropped connection often means the server died: give the exit a moment to show.
        code = run.container.wait_exit(1.0) if run.container else None
        if code is not None:
            actual += f"; the container exited with code {code}"
        raise fail(run, exchange.route, "an HTTP answer", actual, spec)


def require_status(run: ImageRun, exchange: Exchange, expected: int, spec: str) -> None:
    require_answer(run, exchange, spec)
    if exchange.status != expected:
        raise fail(run, exchange.route, f"status {expected}", exchange.summary(), spec)


def require_json_envelope(run: ImageRun, exchange: Exchange, spec: str = "section 2") -> dict[str, object]:
    """Content-Type application/json, a body matching the envelope, statusCode == the HTTP status."""
    require_answer(run, exchange, spec)
    if exchange.media_type != JSON:
        raise fail(
            run,
            exchange.route,
            f"Content-Type {JSON}",
            exchange.summary(),
            f"{spec} (every route returns {JSON})",
        )
    return require_envelope_body(run, exchange, spec)


def require_envelope_body(run: ImageRun, exchange: Exchange, spec: str = "section 2") -> dict[str, object]:
    try:
        body = exchange.json()
    except ValueError:
        raise fail(run, exchange.route, "a JSON body", exchange.summary(), spec) from None
    errors = sorted(
        jsonschema.Draft202012Validator(schema("response.schema.json")).iter_errors(body), key=str
    )
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "body"
        raise fail(
            run,
            exchange.route,
            "the envelope {statusCode, status, message}",
            f"{where}: {errors[0].message}",
            spec,
        )
    if body["statusCode"] != exchange.status:
        actual = f"statusCode {body['statusCode']}"
        raise fail(run, exchange.route, f"statusCode {exchange.status} (the HTTP status)", actual, spec)
    return body  # type: ignore[no-any-return]


def require_metadata(run: ImageRun) -> tuple[str, ...]:
    if run.metadata is None:
        raise CheckSkipped(run.metadata_note or "no model.yaml")
    return run.metadata.inputs


# -- image ---------------------------------------------------------------------------------


def image_default_command(run: ImageRun) -> None:
    assert run.image is not None
    config = run.image.config
    if not (config.get("Cmd") or config.get("Entrypoint")):
        raise fail(
            run, "image config", "a CMD or ENTRYPOINT that starts the server", "neither is set", "section 2"
        )


def image_port_env(run: ImageRun) -> None:
    readiness = run.wait_ready()
    if readiness.ready or readiness.first_answer_seconds is not None:
        return
    if readiness.exit_code is not None:
        raise CheckSkipped(f"the container exited (code {readiness.exit_code}) before anything could answer")
    assert run.container is not None
    raise fail(
        run,
        f"port {run.container.model_port}",
        f"an HTTP answer on PSC_MODEL_PORT={run.container.model_port}",
        f"nothing answered there within {run.status_timeout:g} s while the container ran",
        "section 2 (the server listens on PSC_MODEL_PORT)",
    )


# -- /status -------------------------------------------------------------------------------


def status_ready(run: ImageRun) -> None:
    readiness = run.wait_ready()
    if not readiness.ready:
        expected = f"200 within the status timeout ({run.status_timeout:g} s)"
        actual = run.not_ready_reason(readiness)
        raise fail(run, "GET /status", expected, actual, "section 1 (load test) and section 2 (GET /status)")


def ready_status_exchange(run: ImageRun) -> Exchange:
    run.require_ready()
    assert run.readiness is not None and run.readiness.last is not None
    return run.readiness.last


def status_content_type(run: ImageRun) -> None:
    exchange = ready_status_exchange(run)
    if exchange.media_type != JSON:
        raise fail(
            run,
            "GET /status",
            f"Content-Type {JSON}",
            exchange.summary(),
            "section 2 (every route returns application/json)",
        )


def status_schema(run: ImageRun) -> None:
    # The media type is status.content-type's finding: the body is judged on its own here.
    require_envelope_body(run, ready_status_exchange(run))


# -- /run ----------------------------------------------------------------------------------


def run_example(case: casedata.Case, run: ImageRun) -> None:
    inputs = require_metadata(run)
    assert run.metadata is not None
    result = run.run_job(casedata.resolve_inputs(case, inputs), name=case.name)
    spec = "section 2 (POST /run) and section 4"
    if result.exchange.error == "timed out":
        raise fail(
            run, "POST /run", f"an answer within the run timeout ({run.run_timeout:g} s)", "no answer", spec
        )
    require_status(run, result.exchange, 200, spec)
    require_json_envelope(run, result.exchange)
    expected = casedata.expected_outputs(case, run.metadata.outputs)
    if not expected:
        raise CheckSkipped(
            f"case {case.name} keeps no expected output file ({', '.join(run.metadata.outputs)})"
        )
    for name, path in expected.items():
        written = result.output(name)
        if not written.is_file():
            raise fail(run, "POST /run", f"output file {name} written", "it was not written", spec)
        if written.read_bytes() != path.read_bytes():
            raise fail(
                run,
                "POST /run",
                f"{name} byte-equal to {path}",
                _first_difference(written.read_bytes(), path.read_bytes()),
                spec,
            )


def _first_difference(actual: bytes, expected: bytes) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b),
        min(len(actual), len(expected)),
    )
    excerpt = actual[max(at - 20, 0) : at + 40]
    return f"differs from byte {at} ({len(actual)} bytes written, {len(expected)} expected): {excerpt!r}"


def run_validation_error(case: casedata.Case, run: ImageRun) -> None:
    inputs = require_metadata(run)
    message = casedata.expected_message(case)
    result = run.run_job(casedata.resolve_inputs(case, inputs), name=case.name)
    spec = "section 2 (POST /run, 422) and section 4"
    require_status(run, result.exchange, 422, spec)
    body = require_json_envelope(run, result.exchange)
    if message.lower() not in str(body["message"]).lower():
        raise fail(run, "POST /run", f"a message containing {message!r}", repr(body["message"]), spec)


def run_not_json_415(run: ImageRun) -> None:
    exchange = run.post_raw("/run", b"this is not JSON", "text/plain")
    spec = "section 2 (POST /run, 415)"
    require_status(run, exchange, 415, spec)
    require_json_envelope(run, exchange)


def example_inputs(run: ImageRun) -> dict[str, Path] | None:
    """The input files of the first example case: a job the model should accept, if one is known."""
    example = next((c for c in run.cases if c.kind == casedata.EXAMPLES), None)
    if example is None or run.metadata is None:
        return None
    return casedata.resolve_inputs(example, run.metadata.inputs)


def run_wrong_type_400(run: ImageRun) -> None:
    # With a valid input where one is known, the wrong type is the job's only fault.
    inputs = example_inputs(run) or {}
    result = run.run_job(inputs, name="wrong-type", payload={"type": "url"})
    require_status(run, result.exchange, 400, 'section 2 (POST /run, 400: type is not "file")')
    require_json_envelope(run, result.exchange)


def run_missing_input_400(run: ImageRun) -> None:
    result = run.run_job({}, name="missing-input")
    require_status(run, result.exchange, 400, "section 2 (POST /run, 400: a declared input file missing)")
    require_json_envelope(run, result.exchange)


def run_output_written(run: ImageRun) -> None:
    require_metadata(run)
    assert run.metadata is not None
    inputs = example_inputs(run)
    if inputs is None:
        raise CheckSkipped("needs one examples/<case> to give the model a valid input (--model-data)")
    result = run.run_job(inputs, name="output-written")
    spec = "section 2 (POST /run, 200: every declared output file was written)"
    require_status(run, result.exchange, 200, spec)
    missing = [name for name in run.metadata.outputs if not result.output(name).is_file()]
    if missing:
        raise fail(
            run,
            "POST /run",
            f"200 only once {', '.join(run.metadata.outputs)} are written",
            f"200, but {', '.join(missing)} missing",
            spec,
        )


def no_cases(kind: str, run: ImageRun) -> None:
    if run.options.model_data is None:
        raise CheckSkipped("no test cases: give them with --model-data DIR")
    raise CheckSkipped(f"{run.options.model_data} has no {kind}/<case> directories")


# -- /shutdown -----------------------------------------------------------------------------


def shutdown_response(run: ImageRun) -> None:
    exchange = run.shut_down().exchange
    if exchange.error is not None and exchange.error.startswith("connection dropped"):
        return  # dropping the connection is conformant too
    spec = "section 2 (POST /shutdown)"
    if exchange.status != 202:
        raise fail(
            run,
            "POST /shutdown",
            "202 with the JSON envelope, or a dropped connection",
            exchange.summary(),
            spec,
        )
    require_json_envelope(run, exchange, spec)


def shutdown_exit_code(run: ImageRun) -> None:
    result = run.shut_down()
    spec = "section 2 (POST /shutdown: the process exits with code 0)"
    if result.exit_code is None:
        raise fail(
            run,
            "POST /shutdown",
            f"the process to exit within {run.options.shutdown_timeout:g} s",
            "still running; killed",
            spec,
        )
    if result.exit_code != 0:
        raise fail(run, "POST /shutdown", "exit code 0", f"exit code {result.exit_code}", spec)


# -- the battery ---------------------------------------------------------------------------

STATIC_HEAD = (
    Check(
        "image.default-command",
        "section 2",
        "the image starts its server with no command argument",
        False,
        image_default_command,
    ),
    Check(
        "status.ready",
        "sections 1, 2",
        "GET /status answers 200 within the status timeout",
        True,
        status_ready,
    ),
    Check(
        "status.content-type",
        "section 2",
        "GET /status answers Content-Type application/json",
        True,
        status_content_type,
    ),
    Check(
        "status.schema",
        "section 2",
        "the /status body is the envelope, statusCode equal to the HTTP status",
        True,
        status_schema,
    ),
    Check("image.port-env", "section 2", "the server listens on $PSC_MODEL_PORT", True, image_port_env),
)
STATIC_RUN = (
    Check(
        "run.not-json-415",
        "section 2",
        "a non-JSON body under a non-JSON Content-Type gets 415 JSON",
        True,
        run_not_json_415,
    ),
    Check(
        "run.wrong-type-400",
        "section 2",
        'a job whose type is not "file" gets 400 JSON',
        True,
        run_wrong_type_400,
    ),
    Check(
        "run.missing-input-400",
        "section 2",
        "a job without its declared input file gets 400 JSON",
        True,
        run_missing_input_400,
    ),
    Check(
        "run.output-written",
        "section 2",
        "a 200 from /run means every declared output file was written",
        True,
        run_output_written,
    ),
)
STATIC_TAIL = (
    Check(
        "shutdown.response",
        "section 2",
        "POST /shutdown answers 202 JSON or drops the connection",
        False,  # started on demand: setup must not restart a model that was shut down
        shutdown_response,
    ),
    Check(
        "shutdown.exit-code",
        "section 2",
        "after /shutdown the process exits with code 0",
        False,
        shutdown_exit_code,
    ),
)


def battery(found: list[casedata.Case] | None) -> list[Check]:
    """Every check for one image, in the order they run: /shutdown last."""
    per_case: list[Check] = []
    for kind, func, spec, summary in (
        (
            casedata.EXAMPLES,
            run_example,
            "sections 2, 4",
            "the example's outputs are byte-equal to the expected files",
        ),
        (
            casedata.VALIDATION_ERRORS,
            run_validation_error,
            "sections 2, 4",
            "the case gets 422 JSON with the expected message",
        ),
    ):
        name = "run.example" if kind == casedata.EXAMPLES else "run.validation-error"
        of_kind = [c for c in found or [] if c.kind == kind]
        if of_kind:
            per_case += [Check(f"{name}[{c.name}]", spec, summary, True, partial(func, c)) for c in of_kind]
        else:
            per_case.append(Check(name, spec, summary, True, partial(no_cases, kind)))
    return [*STATIC_HEAD, *per_case, *STATIC_RUN, *STATIC_TAIL]


def describe_all() -> list[tuple[str, str, str]]:
    """(id, SPEC.md part, what it checks), as the README lists them."""
    return [(c.id, c.spec, c.summary) for c in battery(None)]
