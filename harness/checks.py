"""The battery: every conformance check, with a stable id and the contract rule it enforces."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import jsonschema

from . import cases as casedata
from . import compare
from .errors import CheckSkipped, NotRun, SetupError
from .http import Exchange, Outcome
from .jobs import JobResult
from .metadata import schema
from .rehearsal import media_type_problem
from .run import ImageRun

JSON = "application/json"

# Reason phrases servers send besides this Python's own: the names of older and newer RFCs
# (Python 3.13 took RFC 9110's) and werkzeug's. Hyphens and case are not compared.
OTHER_PHRASES: dict[int, tuple[str, ...]] = {
    302: ("Moved Temporarily",),
    306: ("Switch Proxy",),
    413: ("Request Entity Too Large", "Payload Too Large", "Content Too Large"),
    414: ("Request-URI Too Long", "URI Too Long"),
    416: ("Requested Range Not Satisfiable", "Range Not Satisfiable"),
    422: ("Unprocessable Entity", "Unprocessable Content"),
    449: ("Retry With",),
    511: ("Network Authentication Failed",),
}

# The phases of a battery, in the order they run.
IMAGE, STATUS, RUN, SHUTDOWN = "image", "status", "run", "shutdown"


@dataclass(frozen=True)
class Check:
    id: str
    rule: str  # the anchor of the rule in docs/contract.md
    summary: str
    phase: str  # IMAGE, STATUS, RUN or SHUTDOWN
    starts_container: bool  # setup may start the model (never for /shutdown: it starts on demand)
    func: Callable[[ImageRun], None]


# -- shared assertions ---------------------------------------------------------------------


def require_answer(run: ImageRun, exchange: Exchange, rule: str) -> None:
    if exchange.answered:
        return
    actual = exchange.summary()
    if exchange.outcome in (Outcome.DROPPED, Outcome.REFUSED) and run.container is not None:
        # A dropped connection often means the server died: give the exit a moment to show.
        code = run.container.wait_exit(2.0)
        if code is None:
            run.unanswered_in = run.current.check_id if run.current else None
        if code is not None:
            run.died_during = run.current.check_id if run.current else "a check"
            cause = run.exit_cause(bool(run.container.state().get("OOMKilled")))
            actual += f"; the container exited with code {code}{cause}"
        elif run.container.oom_since(run.current.began if run.current else 0.0):
            # A worker process killed for memory, its server still up: the platform fails this too.
            actual += f"; the engine killed a process of the model: {run.out_of_memory()}"
            rule = "resources"
    raise run.finding(exchange.route, "a whole HTTP answer", actual, rule)


def require_status(run: ImageRun, exchange: Exchange, expected: int, rule: str) -> None:
    require_answer(run, exchange, rule)
    if exchange.status != expected:
        raise run.finding(exchange.route, f"status {expected}", exchange.summary(), rule)


def require_json_envelope(run: ImageRun, exchange: Exchange) -> dict[str, Any]:
    """Content-Type application/json, a body matching the envelope, statusCode == the HTTP status."""
    require_answer(run, exchange, "json")
    require_json_type(run, exchange)
    return require_envelope_body(run, exchange)


def require_json_type(run: ImageRun, exchange: Exchange) -> None:
    """One Content-Type header, application/json: a client may read either of two."""
    values = exchange.header_values("Content-Type")
    if len(values) > 1:
        shown = ", ".join(repr(value[:100]) for value in values[:5])
        actual = f"{len(values)} Content-Type headers ({shown})"
        raise run.finding(exchange.route, f"one Content-Type header, {JSON}", actual, "json")
    if exchange.media_type != JSON:
        raise run.finding(exchange.route, f"Content-Type {JSON}", exchange.summary(), "json")


def reason_phrases(code: int) -> list[str]:
    """The reason phrases known for a status code, this Python's first; none for an unregistered code."""
    try:
        known = [HTTPStatus(code).phrase]
    except ValueError:
        known = []
    return [*known, *(p for p in OTHER_PHRASES.get(code, ()) if p not in known)]


def normal_phrase(phrase: str) -> str:
    return " ".join(phrase.replace("-", " ").split()).lower()


def require_envelope_body(run: ImageRun, exchange: Exchange) -> dict[str, Any]:
    try:
        body = exchange.json()
    except ValueError as exc:
        raise run.finding(exchange.route, "a JSON body", f"{exc}: {exchange.summary()}", "envelope") from None
    errors = sorted(
        jsonschema.Draft202012Validator(schema("response.schema.json")).iter_errors(body), key=str
    )
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "body"
        message = errors[0].message
        message = message if len(message) <= 200 else message[:200] + "..."
        raise run.finding(
            exchange.route,
            "the envelope {statusCode, status, message}",
            same_root(run, f"{where}: {message}"),
            "envelope",
        )
    code = body["statusCode"]
    if type(code) is not int:
        # JSON Schema's "integer" takes 200.0 too; a client that reads an integer does not.
        actual = f"statusCode {json.dumps(code)}, a number with a fraction or exponent"
        raise run.finding(exchange.route, "statusCode a JSON integer such as 200", actual, "envelope")
    if code != exchange.status:
        actual = f"statusCode {code}"
        raise run.finding(
            exchange.route, f"statusCode {exchange.status} (the HTTP status)", actual, "envelope"
        )
    phrases = reason_phrases(code)
    if phrases and normal_phrase(body["status"]) not in {normal_phrase(p) for p in phrases}:
        expected = f"status {phrases[0]!r} (the reason phrase of {code})"
        raise run.finding(exchange.route, expected, f"status {body['status'][:100]!r}", "envelope")
    return body  # type: ignore[no-any-return]


def same_root(run: ImageRun, reason: str) -> str:
    """One root cause, one explanation: later checks that meet it again point at the first."""
    current = run.current.check_id if run.current else ""
    first = run.root_causes.setdefault(reason, current)
    return reason if first == current else f"the same as {first}: {reason}"


def planned_jobs(run: ImageRun) -> list[dict[str, Any]]:
    """The inputs of every job the battery's /run checks will make, in one list."""
    if run.metadata is None:
        return []
    planned: list[dict[str, Any]] = [dict(run.case_inputs(case)) for case in run.cases]
    example = example_inputs(run)
    planned += [example, example] if example is not None else []  # wrong-type-400, output-written
    return [*planned, {}]  # missing-input-400


def require_metadata(run: ImageRun) -> tuple[str, ...]:
    if run.metadata_error is not None:
        raise NotRun("model.yaml is not usable (see image.model-yaml)")
    if run.metadata is None:
        raise CheckSkipped(run.observed.model_yaml_note or "no model.yaml")
    return run.metadata.inputs


def require_regular_outputs(run: ImageRun, result: JobResult, rule: str) -> None:
    """Every declared output a regular file within its declared maxSize."""
    assert run.metadata is not None
    for name in run.metadata.outputs:
        written = result.output(name)
        if not written.is_file():
            raise run.finding("POST /run", f"output file {name} written", written.describe(), rule)
        limit = run.metadata.output_max.get(name)
        if limit is not None and written.size > limit:
            raise run.finding(
                "POST /run",
                f"{name} within its declared maxSize of {limit} bytes",
                f"{written.size} bytes",
                "rehearsal",
            )
        media = run.metadata.output_media.get(name)
        if media and written.content is not None:
            problem = media_type_problem(media, written.content)
            if problem is not None:
                raise run.finding(
                    "POST /run", f"{name} of its declared mediaType {media}", problem, "rehearsal"
                )


# -- image ---------------------------------------------------------------------------------


def image_model_yaml(run: ImageRun) -> None:
    if run.metadata_error is not None:
        # Not a verdict on the contract's routes: without it the image cannot be checked whole.
        raise SetupError(run.metadata_error)
    if run.metadata is None:
        raise CheckSkipped(run.observed.model_yaml_note or "no model.yaml")


def image_default_command(run: ImageRun) -> None:
    if not run.has_command:
        raise run.finding(
            "image config", "a CMD or ENTRYPOINT that starts the server", "neither is set", "default-command"
        )


def image_port_env(run: ImageRun) -> None:
    readiness = run.wait_ready()
    if readiness.ready or readiness.first_answer_seconds is not None:
        return
    if readiness.exit_code is not None:
        raise NotRun(f"the container exited (code {readiness.exit_code}) before anything could answer")
    assert run.container is not None
    actual = f"nothing answered there within {run.status_timeout:g} s while the container ran"
    if readiness.other_ports:
        actual = f"it listens on {', '.join(map(str, readiness.other_ports))} instead"
    raise run.finding(
        f"port {run.container.model_port}",
        f"an HTTP answer on PSC_MODEL_PORT={run.container.model_port}",
        same_root(run, actual),
        "port",
    )


# -- /status -------------------------------------------------------------------------------


def status_ready(run: ImageRun) -> None:
    readiness = run.wait_ready()
    if not readiness.ready:
        expected = f"200 within the status timeout ({run.status_timeout:g} s)"
        raise run.finding("GET /status", expected, run.not_ready_reason(readiness), "status")


def ready_status_exchange(run: ImageRun) -> Exchange:
    run.require_ready()
    assert run.readiness is not None and run.readiness.last is not None
    return run.readiness.last


def status_content_type(run: ImageRun) -> None:
    require_json_type(run, ready_status_exchange(run))


def status_schema(run: ImageRun) -> None:
    # The media type is status.content-type's finding: the body is judged on its own here.
    require_envelope_body(run, ready_status_exchange(run))


# -- /run ----------------------------------------------------------------------------------


def run_example(case: casedata.Case, run: ImageRun) -> None:
    require_metadata(run)
    assert run.metadata is not None
    result = run.run_job(run.case_inputs(case), name=case.name)
    if result.exchange.outcome is Outcome.TIMED_OUT:
        raise run.finding(
            "POST /run",
            f"an answer within the run timeout ({run.run_timeout:g} s)",
            result.exchange.summary(),
            "run-timeout",
        )
    require_status(run, result.exchange, 200, "run-200")
    require_json_envelope(run, result.exchange)
    require_regular_outputs(run, result, "run-200")
    expected = run.case_outputs(case)
    if not expected:
        raise CheckSkipped(
            f"case {case.name} keeps no expected output file ({', '.join(run.metadata.outputs)})"
        )
    declared = (*run.metadata.inputs, *run.metadata.outputs)
    default = compare.Tolerance(run.options.rel_tol, run.options.abs_tol, run.options.tolerance_source)
    compared = [
        compare.compare_output(
            name,
            path,
            result.output(name),
            run.metadata.output_media.get(name) or "",
            compare_bytes=run.options.compare_bytes,
            tolerance=compare.tolerance_for(case.path, name, declared, default),
            comparator=run.options.comparator,
            case_name=case.name,
            case_dir=case.path,
        )
        for name, path in expected.items()
    ]
    details = run.current.details if run.current is not None else {}
    details["comparisons"] = [outcome.record for outcome in compared]
    mismatches = [outcome for outcome in compared if outcome.mismatch is not None]
    if not mismatches:
        return
    first = mismatches[0].mismatch
    assert first is not None
    actual = first.actual
    if len(mismatches) > 1:
        actual += f"\nalso differ: {', '.join(m.output for m in mismatches[1:])}"
    if run.options.report_dir is not None:
        # What the model wrote, for the author to look at beside the expected files.
        written = {name: result.output(name) for name in run.metadata.outputs}
        kept, problems = compare.keep_outputs(run.options.report_dir, (run.label, case.name), written)
        if kept:
            details["savedOutputs"] = kept
            actual += f"\nthe outputs the model wrote: {', '.join(kept)} (in {run.options.report_dir})"
        if problems:
            actual += f"\noutputs not kept: {'; '.join(problems)}"
    raise run.finding("POST /run", first.expected, actual, first.rule)


def run_validation_error(case: casedata.Case, run: ImageRun) -> None:
    require_metadata(run)
    message = run.case_message(case)
    result = run.run_job(run.case_inputs(case), name=case.name)
    require_status(run, result.exchange, 422, "run-422")
    body = require_json_envelope(run, result.exchange)
    if message.lower() not in str(body["message"]).lower():
        raise run.finding(
            "POST /run", f"a message containing {message!r}", repr(body["message"])[:300], "run-422"
        )


def run_not_json_415(run: ImageRun) -> None:
    exchange = run.request("POST", "/run", body=b"this is not JSON", headers={"Content-Type": "text/plain"})
    require_status(run, exchange, 415, "run-415")
    require_json_envelope(run, exchange)


def example_inputs(run: ImageRun) -> dict[str, Any] | None:
    """The input files of the first example case: a job the model should accept, if one is known."""
    example = next((c for c in run.cases if c.kind == casedata.EXAMPLES), None)
    if example is None or run.metadata is None:
        return None
    return dict(run.case_inputs(example))


def run_wrong_type_400(run: ImageRun) -> None:
    # With a valid input where one is known, the wrong type is the job's only fault.
    result = run.run_job(example_inputs(run) or {}, name="wrong-type", payload={"type": "url"})
    require_status(run, result.exchange, 400, "run-400")
    require_json_envelope(run, result.exchange)


def run_missing_input_400(run: ImageRun) -> None:
    result = run.run_job({}, name="missing-input")
    require_status(run, result.exchange, 400, "run-400")
    require_json_envelope(run, result.exchange)


def run_output_written(run: ImageRun) -> None:
    require_metadata(run)
    inputs = example_inputs(run)
    if inputs is None:
        raise CheckSkipped("needs one examples/<case> to give the model a valid input (--model-data)")
    result = run.run_job(inputs, name="output-written")
    require_status(run, result.exchange, 200, "run-200")
    require_regular_outputs(run, result, "run-200")


def route_unknown_404(run: ImageRun) -> None:
    # A new path each run: no answer made for one known path can pass for the rule.
    exchange = run.request("GET", f"/psc-harness-{secrets.token_hex(6)}")
    require_status(run, exchange, 404, "unknown-routes")
    require_json_envelope(run, exchange)


def route_wrong_method_405(run: ImageRun) -> None:
    for method, path in (("GET", "/run"), ("PUT", "/status")):
        exchange = run.request(method, path)
        require_status(run, exchange, 405, "unknown-routes")
        require_json_envelope(run, exchange)


def no_cases(kind: str, run: ImageRun) -> None:
    if run.options.model_data is None:
        raise CheckSkipped("no test cases: give them with --model-data DIR")
    raise CheckSkipped(f"{run.options.model_data} has no {kind}/<case> directories")


# -- /shutdown -----------------------------------------------------------------------------


def shutdown_response(run: ImageRun) -> None:
    exchange = run.shut_down().exchange
    if exchange.outcome is Outcome.DROPPED:
        return  # dropping the connection is conformant too
    if exchange.status != 202 or not exchange.answered:
        raise run.finding(
            "POST /shutdown",
            "202 with the JSON envelope, or a dropped connection",
            exchange.summary(),
            "shutdown",
        )
    require_json_envelope(run, exchange)


def shutdown_exit_code(run: ImageRun) -> None:
    result = run.shut_down()
    if result.exit_code is None:
        raise run.finding(
            "POST /shutdown",
            f"the process to exit within {run.options.shutdown_timeout:g} s",
            "still running; killed",
            "shutdown",
        )
    if result.exit_code != 0:
        raise run.finding("POST /shutdown", "exit code 0", f"exit code {result.exit_code}", "shutdown")


# -- the battery ---------------------------------------------------------------------------

HEAD = (
    Check(
        "image.model-yaml",
        "model-yaml",
        "model.yaml is found and valid (its limits, timeouts and file names are used)",
        IMAGE,
        False,
        image_model_yaml,
    ),
    Check(
        "image.default-command",
        "default-command",
        "the image starts its server with no command argument",
        IMAGE,
        False,
        image_default_command,
    ),
    Check(
        "status.ready",
        "status",
        "GET /status answers 200 within the status timeout",
        STATUS,
        True,
        status_ready,
    ),
    Check(
        "status.content-type",
        "json",
        "GET /status answers one Content-Type header, application/json",
        STATUS,
        True,
        status_content_type,
    ),
    Check(
        "status.schema",
        "envelope",
        "the /status body is the envelope, statusCode the HTTP status (an integer), status its reason phrase",
        STATUS,
        True,
        status_schema,
    ),
    Check("image.port-env", "port", "the server listens on $PSC_MODEL_PORT", STATUS, True, image_port_env),
)
RUN_CHECKS = (
    Check(
        "run.not-json-415",
        "run-415",
        "a non-JSON body under a non-JSON Content-Type gets 415 JSON",
        RUN,
        True,
        run_not_json_415,
    ),
    Check(
        "run.wrong-type-400",
        "run-400",
        'a job whose type is not "file" gets 400 JSON',
        RUN,
        True,
        run_wrong_type_400,
    ),
    Check(
        "run.missing-input-400",
        "run-400",
        "a job without its declared input file gets 400 JSON",
        RUN,
        True,
        run_missing_input_400,
    ),
    Check(
        "run.output-written",
        "run-200",
        "a 200 from /run means every declared output is a regular file, written",
        RUN,
        True,
        run_output_written,
    ),
    # Requests of the run timeout's length, like the jobs: counted in the per-image bound.
    Check(
        "route.unknown-404",
        "unknown-routes",
        "GET of an unknown path gets 404 JSON",
        RUN,
        True,
        route_unknown_404,
    ),
    Check(
        "route.wrong-method-405",
        "unknown-routes",
        "GET /run and PUT /status get 405 JSON",
        RUN,
        True,
        route_wrong_method_405,
    ),
)
TAIL = (
    Check(
        "shutdown.response",
        "shutdown",
        "POST /shutdown answers 202 JSON or drops the connection",
        SHUTDOWN,
        False,
        shutdown_response,
    ),
    Check(
        "shutdown.exit-code",
        "shutdown",
        "after /shutdown the process exits with code 0",
        SHUTDOWN,
        False,
        shutdown_exit_code,
    ),
)


def rehearsal_warnings(run: ImageRun) -> None:
    warnings = run.observed.all_warnings()
    if warnings:
        raise run.finding(
            "platform rehearsal", "no warning (--strict-rehearsal)", "; ".join(warnings), "rehearsal"
        )


STRICT = Check(
    "rehearsal.warnings",
    "rehearsal",
    "with --strict-rehearsal: the platform rehearsal found nothing to warn of",
    SHUTDOWN,
    False,
    rehearsal_warnings,
)


def battery(found: list[casedata.Case] | None, *, strict: bool = False) -> list[Check]:
    """Every check for one image, in the order they run: /shutdown last."""
    per_case: list[Check] = []
    for kind, func, rule, summary in (
        (
            casedata.EXAMPLES,
            run_example,
            "test-data",
            "the example's outputs equal the expected files (JSON as values, within any tolerance)",
        ),
        (
            casedata.VALIDATION_ERRORS,
            run_validation_error,
            "run-422",
            "the case gets 422 JSON with the expected message",
        ),
    ):
        name = "run.example" if kind == casedata.EXAMPLES else "run.validation-error"
        of_kind = [c for c in found or [] if c.kind == kind]
        if of_kind:
            per_case += [
                Check(f"{name}[{c.name}]", rule, summary, RUN, True, partial(func, c)) for c in of_kind
            ]
        else:
            per_case.append(Check(name, rule, summary, RUN, True, partial(no_cases, kind)))
    return [*HEAD, *per_case, *RUN_CHECKS, *TAIL, *((STRICT,) if strict else ())]


def describe_all() -> list[tuple[str, str, str]]:
    """(id, contract rule, what it checks), as the README lists them."""
    return [(c.id, c.rule, c.summary) for c in battery(None)]
