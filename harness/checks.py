"""The HTTP contract's battery: every check, declared where it is written.

Each check receives a ``CheckContext``; its docstring's first paragraph is its summary in
the reports and README. Checks run in the order declared here; the shutdown phase runs last.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from . import cases as casedata
from . import compare
from .battery import Check, CheckFunc, Inputs, Phase, Registry
from .context import CheckContext
from .contracts import Contract
from .envelope import require_envelope_body, require_json_envelope, require_json_type, require_status
from .errors import CheckSkipped, NotRun, SetupError
from .http import Exchange, ModelClient, Outcome
from .jobs import JobResult, OutputFile
from .rehearsal import media_type_problem

HTTP = Registry("http")
check = HTTP.check


# -- what several checks need ---------------------------------------------------------------


def require_metadata(ctx: CheckContext) -> tuple[str, ...]:
    if ctx.metadata_error is not None:
        raise NotRun("model.yaml is not usable (see image.model-yaml)")
    if ctx.metadata is None:
        raise CheckSkipped(ctx.model_yaml_note or "no model.yaml")
    return ctx.metadata.inputs


def example_inputs(ctx: CheckContext) -> dict[str, Any] | None:
    """The input files of the first example case: a job the model should accept, if one is known."""
    example = next((c for c in ctx.cases if c.kind == casedata.EXAMPLES), None)
    if example is None or ctx.metadata is None:
        return None
    return dict(ctx.declared.case_inputs(example))


def one_example(ctx: CheckContext) -> Sequence[Inputs]:
    inputs = example_inputs(ctx)
    return [inputs] if inputs is not None else []


def case_job(case: casedata.Case, ctx: CheckContext) -> Sequence[Inputs]:
    return [ctx.declared.case_inputs(case)]


def require_regular_outputs(ctx: CheckContext, result: JobResult, rule: str) -> None:
    """Every declared output a regular file within its declared maxSize."""
    assert ctx.metadata is not None
    for name in ctx.metadata.outputs:
        written = result.output(name)
        if not written.is_file():
            raise ctx.finding("POST /run", f"output file {name} written", written.describe(), rule)
        limit = ctx.metadata.output_max.get(name)
        if limit is not None and written.size > limit:
            raise ctx.finding(
                "POST /run",
                f"{name} within its declared maxSize of {limit} bytes",
                f"{written.size} bytes",
                "rehearsal",
            )
        media = ctx.metadata.output_media.get(name)
        if media and written.content is not None:
            problem = media_type_problem(media, written.content)
            if problem is not None:
                raise ctx.finding(
                    "POST /run", f"{name} of its declared mediaType {media}", problem, "rehearsal"
                )


def ready_status(ctx: CheckContext) -> Exchange:
    exchange = ctx.ready_status()
    assert isinstance(exchange, Exchange)  # this contract's transport is HTTP
    return exchange


def without_cases(kind: str) -> CheckFunc:
    """A per-case check with no case of its kind: one item that says why."""

    def no_cases(ctx: CheckContext) -> None:
        if ctx.options.model_data is None:
            raise CheckSkipped("no test cases: give them with --model-data DIR")
        raise CheckSkipped(f"{ctx.options.model_data} has no {kind}/<case> directories")

    return no_cases


# -- the image ------------------------------------------------------------------------------


@check("image.model-yaml", rule="model-yaml", phase=Phase.IMAGE, starts_container=False)
def image_model_yaml(ctx: CheckContext) -> None:
    """`model.yaml` is found and valid; every problem is listed at once, with its fix (an
    error: without it the image cannot be checked whole)"""
    if ctx.metadata_error is not None:
        # Not a verdict on the contract's routes: without it the image cannot be checked whole.
        raise SetupError(ctx.metadata_error)
    if ctx.metadata is None:
        raise CheckSkipped(ctx.model_yaml_note or "no model.yaml")


@check("image.default-command", rule="default-command", phase=Phase.IMAGE, starts_container=False)
def image_default_command(ctx: CheckContext) -> None:
    """the image starts its server with no command argument"""
    if not ctx.has_command:
        raise ctx.finding(
            "image config", "a CMD or ENTRYPOINT that starts the server", "neither is set", "default-command"
        )


# -- /status --------------------------------------------------------------------------------


@check("status.ready", rule="status", phase=Phase.STATUS)
def status_ready(ctx: CheckContext) -> None:
    """GET /status answers 200 within the status timeout"""
    readiness = ctx.readiness()
    if not readiness.ready:
        expected = f"200 within the status timeout ({ctx.budget.status_timeout:g} s)"
        raise ctx.finding("GET /status", expected, ctx.not_ready_reason(readiness), "status")


@check("status.content-type", rule="json", phase=Phase.STATUS)
def status_content_type(ctx: CheckContext) -> None:
    """GET /status answers one Content-Type header, application/json"""
    require_json_type(ctx, ready_status(ctx))


@check("status.schema", rule="envelope", phase=Phase.STATUS)
def status_schema(ctx: CheckContext) -> None:
    """the /status body is the envelope, statusCode the HTTP status (an integer), status its
    reason phrase"""
    # The media type is status.content-type's finding: the body is judged on its own here.
    require_envelope_body(ctx, ready_status(ctx))


@check("image.port-env", rule="port", phase=Phase.STATUS)
def image_port_env(ctx: CheckContext) -> None:
    """the server listens on $PSC_MODEL_PORT"""
    readiness = ctx.readiness()
    if readiness.ready or readiness.first_answer_seconds is not None:
        return
    if readiness.exit_code is not None:
        raise NotRun(f"the container exited (code {readiness.exit_code}) before anything could answer")
    port = ctx.model_port
    actual = f"nothing answered there within {ctx.budget.status_timeout:g} s while the container ran"
    if readiness.other_ports:
        actual = f"it listens on {', '.join(map(str, readiness.other_ports))} instead"
    raise ctx.finding(
        f"port {port}", f"an HTTP answer on PSC_MODEL_PORT={port}", ctx.same_root(actual), "port"
    )


# -- /run -----------------------------------------------------------------------------------


@check("run.example", rule="test-data", phase=Phase.RUN, per_case=casedata.EXAMPLES, jobs=case_job)
def run_example(case: casedata.Case, ctx: CheckContext) -> None:
    """the example's outputs equal the expected files (JSON as values, within any tolerance)"""
    require_metadata(ctx)
    metadata = ctx.metadata
    assert metadata is not None
    result = ctx.run_job(ctx.declared.case_inputs(case), name=case.name)
    if result.exchange.outcome is Outcome.TIMED_OUT:
        raise ctx.finding(
            "POST /run",
            f"an answer within the run timeout ({ctx.budget.run_timeout:g} s)",
            result.exchange.summary(),
            "run-timeout",
        )
    require_status(ctx, result.exchange, 200, "run-200")
    require_json_envelope(ctx, result.exchange)
    require_regular_outputs(ctx, result, "run-200")
    judge_outputs(ctx, case, result.output, "POST /run")


def judge_outputs(
    ctx: CheckContext,
    case: casedata.Case,
    written: Callable[[str], OutputFile],
    route: str,
    rule: str | None = None,
) -> None:
    """The outputs the model wrote for an example against its expected files: equal (JSON as
    values, within any tolerance, or as the author's comparator says), else a finding that
    shows every difference and keeps what the model wrote (``rule``: the check's own, when the
    comparison serves another rule than the test data's)."""
    metadata = ctx.metadata
    assert metadata is not None
    expected = ctx.declared.case_outputs(case)
    if not expected:
        raise CheckSkipped(f"case {case.name} keeps no expected output file ({', '.join(metadata.outputs)})")
    options = ctx.options
    declared = (*metadata.inputs, *metadata.outputs)
    default = compare.Tolerance(options.rel_tol, options.abs_tol, options.tolerance_source)
    compared = [
        compare.compare_output(
            name,
            path,
            written(name),
            metadata.output_media.get(name) or "",
            compare_bytes=options.compare_bytes,
            tolerance=compare.tolerance_for(case.path, name, declared, default),
            comparator=options.comparator,
            case_name=case.name,
            case_dir=case.path,
        )
        for name, path in expected.items()
    ]
    ctx.details["comparisons"] = [outcome.record for outcome in compared]
    mismatches = [outcome for outcome in compared if outcome.mismatch is not None]
    if not mismatches:
        return
    first = mismatches[0].mismatch
    assert first is not None
    actual = first.actual
    if len(mismatches) > 1:
        actual += f"\nalso differ: {', '.join(m.output for m in mismatches[1:])}"
    if options.report_dir is not None:
        # What the model wrote, for the author to look at beside the expected files.
        kept, problems = compare.keep_outputs(
            options.report_dir, (ctx.label, case.name), {name: written(name) for name in metadata.outputs}
        )
        if kept:
            ctx.details["savedOutputs"] = kept
            actual += f"\nthe outputs the model wrote: {', '.join(kept)} (in {options.report_dir})"
        if problems:
            actual += f"\noutputs not kept: {'; '.join(problems)}"
    raise ctx.finding(route, first.expected, actual, rule or first.rule)


@check(
    "run.validation-error",
    rule="run-422",
    phase=Phase.RUN,
    per_case=casedata.VALIDATION_ERRORS,
    jobs=case_job,
)
def run_validation_error(case: casedata.Case, ctx: CheckContext) -> None:
    """the case gets 422 JSON with the expected message"""
    require_metadata(ctx)
    message = ctx.declared.case_message(case)
    result = ctx.run_job(ctx.declared.case_inputs(case), name=case.name)
    require_status(ctx, result.exchange, 422, "run-422")
    body = require_json_envelope(ctx, result.exchange)
    if message.lower() not in str(body["message"]).lower():
        raise ctx.finding(
            "POST /run", f"a message containing {message!r}", repr(body["message"])[:300], "run-422"
        )


@check("run.not-json-415", rule="run-415", phase=Phase.RUN)
def run_not_json_415(ctx: CheckContext) -> None:
    """a non-JSON body under a non-JSON Content-Type gets 415 JSON"""
    exchange = ctx.request("POST", "/run", body=b"this is not JSON", headers={"Content-Type": "text/plain"})
    require_status(ctx, exchange, 415, "run-415")
    require_json_envelope(ctx, exchange)


@check("run.wrong-type-400", rule="run-400", phase=Phase.RUN, jobs=one_example)
def run_wrong_type_400(ctx: CheckContext) -> None:
    """a job whose type is not "file" gets 400 JSON"""
    # With a valid input where one is known, the wrong type is the job's only fault.
    result = ctx.run_job(example_inputs(ctx) or {}, name="wrong-type", payload={"type": "url"})
    require_status(ctx, result.exchange, 400, "run-400")
    require_json_envelope(ctx, result.exchange)


@check("run.missing-input-400", rule="run-400", phase=Phase.RUN, jobs=lambda ctx: [{}])
def run_missing_input_400(ctx: CheckContext) -> None:
    """a job without its declared input file gets 400 JSON"""
    result = ctx.run_job({}, name="missing-input")
    require_status(ctx, result.exchange, 400, "run-400")
    require_json_envelope(ctx, result.exchange)


@check("run.output-written", rule="run-200", phase=Phase.RUN, jobs=one_example)
def run_output_written(ctx: CheckContext) -> None:
    """a 200 from /run means every declared output is a regular file, written"""
    require_metadata(ctx)
    inputs = example_inputs(ctx)
    if inputs is None:
        raise CheckSkipped("needs one examples/<case> to give the model a valid input (--model-data)")
    result = ctx.run_job(inputs, name="output-written")
    require_status(ctx, result.exchange, 200, "run-200")
    require_regular_outputs(ctx, result, "run-200")


# Requests of the run timeout's length, like the jobs: counted in the per-image bound.
@check("route.unknown-404", rule="unknown-routes", phase=Phase.RUN)
def route_unknown_404(ctx: CheckContext) -> None:
    """GET of an unknown path gets 404 JSON"""
    # A new path each run: no answer made for one known path can pass for the rule.
    exchange = ctx.request("GET", f"/psc-harness-{secrets.token_hex(6)}")
    require_status(ctx, exchange, 404, "unknown-routes")
    require_json_envelope(ctx, exchange)


@check("route.wrong-method-405", rule="unknown-routes", phase=Phase.RUN)
def route_wrong_method_405(ctx: CheckContext) -> None:
    """GET /run and PUT /status get 405 JSON"""
    for method, path in (("GET", "/run"), ("PUT", "/status")):
        exchange = ctx.request(method, path)
        require_status(ctx, exchange, 405, "unknown-routes")
        require_json_envelope(ctx, exchange)


# -- /shutdown ------------------------------------------------------------------------------


@check("shutdown.response", rule="shutdown", phase=Phase.SHUTDOWN, starts_container=False)
def shutdown_response(ctx: CheckContext) -> None:
    """POST /shutdown answers 202 JSON or drops the connection"""
    exchange = ctx.shut_down().exchange
    if exchange.outcome is Outcome.DROPPED:
        return  # dropping the connection is conformant too
    if exchange.status != 202 or not exchange.answered:
        raise ctx.finding(
            "POST /shutdown",
            "202 with the JSON envelope, or a dropped connection",
            exchange.summary(),
            "shutdown",
        )
    assert isinstance(exchange, Exchange)  # this contract's transport is HTTP
    require_json_envelope(ctx, exchange)


@check("shutdown.exit-code", rule="shutdown", phase=Phase.SHUTDOWN, starts_container=False)
def shutdown_exit_code(ctx: CheckContext) -> None:
    """after /shutdown the process exits with code 0"""
    result = ctx.shut_down()
    if result.exit_code is None:
        raise ctx.finding(
            "POST /shutdown",
            f"the process to exit within {ctx.budget.shutdown_timeout:g} s",
            "still running; killed",
            "shutdown",
        )
    if result.exit_code != 0:
        raise ctx.finding("POST /shutdown", "exit code 0", f"exit code {result.exit_code}", "shutdown")


@check("rehearsal.warnings", rule="rehearsal", phase=Phase.SHUTDOWN, starts_container=False, strict_only=True)
def rehearsal_warnings(ctx: CheckContext) -> None:
    """with --strict-rehearsal: the platform rehearsal found nothing to warn of"""
    warnings = ctx.warnings()
    if warnings:
        raise ctx.finding(
            "platform rehearsal", "no warning (--strict-rehearsal)", "; ".join(warnings), "rehearsal"
        )


CONTRACT = Contract("http", HTTP, without_cases, ModelClient, "/status")


def battery(found: Sequence[casedata.Case] | None, *, strict: bool = False) -> list[Check]:
    """Every check for one image, in the order they run: /shutdown last."""
    return HTTP.battery(found, strict=strict, without_cases=without_cases)


def describe_all() -> list[tuple[str, str, str]]:
    """(id, contract rule, what it checks), as README's table lists them."""
    return HTTP.describe()
