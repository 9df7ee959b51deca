"""The gRPC variant's battery (model.yaml specification 0.4): service ``ModzyModel``.

The ids mirror the HTTP battery's where a check means the same (``status.ready``,
``run.example[<case>]``, ``shutdown.exit-code``); what only gRPC has gets its own
(``status.metadata``, ``run.batch``, ``run.mixed-batch``, ``run.max-size``, ``run.flags``).
The image checks are the HTTP battery's own functions: the image is the same kind of thing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from . import cases as casedata
from . import grpcwire
from .battery import Check, Phase, Registry
from .budget import DEFAULT_RUN_TIMEOUT, DEFAULT_STATUS_TIMEOUT
from .checks import (
    image_default_command,
    image_model_yaml,
    image_port_env,
    judge_outputs,
    rehearsal_warnings,
    require_metadata,
    without_cases,
)
from .context import CheckContext
from .contracts import Contract
from .errors import CheckSkipped
from .grpcclient import MESSAGE_LIMIT, GrpcExchange, GrpcModelClient
from .jobs import OutputFile
from .metadata import ModelMetadata
from .runtime import DEFAULT_CPUS, DEFAULT_MEMORY
from .transport import Transport
from .units import parse_duration, parse_size

GRPC = Registry("grpc")
check = GRPC.check
RUN = grpcwire.RUN_PATH
OK = 200


def _transport(transport: Transport) -> GrpcModelClient:
    assert isinstance(transport, GrpcModelClient)  # this contract's transport is gRPC
    return transport


def run_items(
    ctx: CheckContext,
    name: str,
    items: list[dict[str, bytes]],
    *,
    detect_drift: bool = False,
    explain: bool = False,
) -> GrpcExchange:
    """One Run of ``items`` on the ready model, within the run timeout."""
    return ctx.call(
        name,
        lambda transport, timeout: _transport(transport).run(
            items, timeout=timeout, detect_drift=detect_drift, explain=explain
        ),
    )


def require_ok(ctx: CheckContext, exchange: GrpcExchange, rule: str) -> Any:
    """A whole answer with gRPC status OK and status_code 200: its message."""
    if not exchange.answered:
        note, broken = ctx.unanswered(exchange)
        raise ctx.finding(exchange.route, "a whole gRPC answer", exchange.summary() + note, broken or rule)
    if not exchange.ok or exchange.status_code != OK:
        raise ctx.finding(exchange.route, "gRPC status OK with status_code 200", exchange.summary(), rule)
    return exchange.message


def require_items(ctx: CheckContext, exchange: GrpcExchange, count: int, rule: str) -> list[Any]:
    """The answer's output items, one for each item sent."""
    items = list(require_ok(ctx, exchange, rule).outputs)
    if len(items) != count:
        raise ctx.finding(RUN, f"{count} output item(s), one for each input item", f"{len(items)}", rule)
    return items


def written(item: Any) -> dict[str, OutputFile]:
    """An output item's files, as the comparison reads files the model wrote."""
    return {
        name: OutputFile(name, "file", len(data), bytes(data), hashlib.sha256(data).hexdigest())
        for name, data in item.output.items()
    }


def _reader(files: dict[str, OutputFile]) -> Callable[[str], OutputFile]:
    """The files of one item by name; an output the item does not hold is missing."""
    return lambda name: files.get(name) or OutputFile(name, "missing")


def item_inputs(ctx: CheckContext, case: casedata.Case) -> dict[str, bytes]:
    """A case's input files, as the bytes of one Run item."""
    return {name: path.read_bytes() for name, path in ctx.declared.case_inputs(case).items()}


def require_success(ctx: CheckContext, item: Any, which: str, rule: str) -> dict[str, OutputFile]:
    """An item that succeeded, with every declared output; its files."""
    files = written(item)
    if not item.success:
        error = bytes(item.output.get(grpcwire.ERROR_KEY, b"")).decode("utf-8", errors="replace")
        raise ctx.finding(RUN, f"{which} to succeed", f"it failed: {error[:300]!r}", rule)
    assert ctx.metadata is not None
    absent = [name for name in ctx.metadata.outputs if name not in files]
    if absent:
        raise ctx.finding(RUN, f"{which} to hold every declared output", f"no {', '.join(absent)}", rule)
    return files


def require_failure(ctx: CheckContext, item: Any, which: str, message: str, rule: str) -> None:
    """An item that failed alone, its error holding ``message``."""
    if item.success:
        raise ctx.finding(RUN, f"{which} to fail (success false, an error key)", "it succeeded", rule)
    error = bytes(item.output.get(grpcwire.ERROR_KEY, b"")).decode("utf-8", errors="replace")
    if message.lower() not in error.lower():
        raise ctx.finding(RUN, f"{which}'s error containing {message!r}", repr(error[:300]), rule)


def examples(ctx: CheckContext) -> list[casedata.Case]:
    return [c for c in ctx.cases if c.kind == casedata.EXAMPLES]


def require_example(ctx: CheckContext) -> list[casedata.Case]:
    require_metadata(ctx)
    found = examples(ctx)
    if not found:
        raise CheckSkipped("needs one examples/<case> to give the model a valid input (--model-data)")
    return found


# -- the image, and Status -----------------------------------------------------------------

check("image.model-yaml", rule="model-yaml", phase=Phase.IMAGE, starts_container=False)(image_model_yaml.func)
check("image.default-command", rule="default-command", phase=Phase.IMAGE, starts_container=False)(
    image_default_command.func
)


@check("status.ready", rule="grpc-status", phase=Phase.STATUS)
def grpc_status_ready(ctx: CheckContext) -> None:
    """Status answers status_code 200 within the status timeout (the first Status loads the model)"""
    readiness = ctx.readiness()
    if not readiness.ready:
        expected = f"status_code 200 within the status timeout ({ctx.budget.status_timeout:g} s)"
        raise ctx.finding(grpcwire.STATUS_PATH, expected, ctx.not_ready_reason(readiness), "grpc-status")


@check("status.metadata", rule="grpc-status", phase=Phase.STATUS)
def status_metadata(ctx: CheckContext) -> None:
    """the Status answer's status is OK and its metadata agrees with model.yaml 0.4: inputs,
    outputs, timeouts and batch size"""
    exchange = ctx.ready_status()
    assert isinstance(exchange, GrpcExchange)
    answer = exchange.message
    if answer.status.strip().upper() != "OK":
        raise ctx.finding(
            exchange.route, "status 'OK' with status_code 200", exchange.summary(), "grpc-status"
        )
    metadata = ctx.metadata
    if metadata is None:
        # As chassis builds them: the metadata is the Status answer's, and the battery uses it.
        adopted = metadata_of(answer, exchange.route)
        if adopted is None:
            raise ctx.finding(
                exchange.route,
                "the model's inputs and outputs (there is no model.yaml)",
                "none",
                "grpc-status",
            )
        ctx.adopt_metadata(adopted)
        raise CheckSkipped(
            f"no model.yaml: the battery uses the Status answer's metadata (inputs {list(adopted.inputs)}, "
            f"outputs {list(adopted.outputs)}, batch size {adopted.max_batch_size})"
        )
    problems = []
    for kind, declared, told in (
        ("inputs", metadata.inputs, [i.filename for i in answer.inputs]),
        ("outputs", metadata.outputs, [o.filename for o in answer.outputs]),
    ):
        if sorted(declared) != sorted(told):
            problems.append(f"{kind} {sorted(told)} where model.yaml declares {sorted(declared)}")
    for name, declared_seconds, told_text in (
        ("timeout.status", metadata.status_timeout, answer.timeout.status),
        ("timeout.run", metadata.run_timeout, answer.timeout.run),
    ):
        try:
            told_seconds = parse_duration(told_text) if told_text else None
        except ValueError:
            told_seconds = None
        if told_seconds is None or abs(told_seconds - declared_seconds) > 1e-6:
            problems.append(f"{name} {told_text!r} where model.yaml declares {declared_seconds:g} s")
    if answer.features.batch_size != metadata.max_batch_size:
        problems.append(
            f"features.batch_size {answer.features.batch_size} where model.yaml declares "
            f"maxBatchSize {metadata.max_batch_size}"
        )
    if problems:
        raise ctx.finding(
            exchange.route, "Status metadata as model.yaml declares it", "; ".join(problems), "grpc-status"
        )


check("image.port-env", rule="port", phase=Phase.STATUS)(image_port_env.func)


def metadata_of(answer: Any, source: str) -> ModelMetadata | None:
    """A model's metadata from its Status answer, for an image without model.yaml; None when
    the answer names no input or no output. Timeouts and sizes it cannot read are left to
    the defaults (the container already runs with the default resources)."""
    inputs = tuple(i.filename for i in answer.inputs if i.filename)
    outputs = tuple(o.filename for o in answer.outputs if o.filename)
    if not inputs or not outputs:
        return None

    def size(text: str) -> int | None:
        try:
            return parse_size(text) if text else None
        except ValueError:
            return None

    def seconds(text: str, default: float) -> float:
        try:
            return parse_duration(text) if text else default
        except ValueError:
            return default

    return ModelMetadata(
        name=answer.model_info.model_name or "model",
        version=answer.model_info.model_version or "0.0.0",
        inputs=inputs,
        outputs=outputs,
        output_max={o.filename: size(o.max_size) for o in answer.outputs if o.filename},
        output_media={o.filename: o.media_type or None for o in answer.outputs if o.filename},
        input_max={i.filename: size(i.max_size) for i in answer.inputs if i.filename},
        input_types={i.filename: tuple(i.accepted_media_types) for i in answer.inputs if i.filename},
        gpu_count=max(int(answer.resources.num_gpus), 0),
        memory_bytes=size(answer.resources.required_ram) or DEFAULT_MEMORY,
        cpu_count=float(answer.resources.num_cpus) or DEFAULT_CPUS,
        status_timeout=seconds(answer.timeout.status, DEFAULT_STATUS_TIMEOUT),
        run_timeout=seconds(answer.timeout.run, DEFAULT_RUN_TIMEOUT),
        source=f"the answer of {source}",
        protocol="grpc",
        max_batch_size=max(int(answer.features.batch_size), 1),
    )


# -- Run -----------------------------------------------------------------------------------


@check("run.example", rule="test-data", phase=Phase.RUN, per_case=casedata.EXAMPLES)
def grpc_run_example(case: casedata.Case, ctx: CheckContext) -> None:
    """the example run alone succeeds and its outputs equal the expected files (JSON as
    values, within any tolerance)"""
    require_metadata(ctx)
    (item,) = require_items(ctx, run_items(ctx, case.name, [item_inputs(ctx, case)]), 1, "grpc-run")
    files = require_success(ctx, item, "the item", "grpc-run")
    judge_outputs(ctx, case, _reader(files), RUN)


@check("run.validation-error", rule="grpc-run", phase=Phase.RUN, per_case=casedata.VALIDATION_ERRORS)
def grpc_run_validation_error(case: casedata.Case, ctx: CheckContext) -> None:
    """the case's item fails (success false) with the expected message under its error key"""
    require_metadata(ctx)
    message = ctx.declared.case_message(case)
    (item,) = require_items(ctx, run_items(ctx, case.name, [item_inputs(ctx, case)]), 1, "grpc-run")
    require_failure(ctx, item, "the item", message, "grpc-run")


@check("run.batch", rule="grpc-batch", phase=Phase.RUN)
def run_batch(ctx: CheckContext) -> None:
    """a batch of maxBatchSize + 1 items answers one item for each, in order, each equal to its
    case's expected outputs"""
    found = require_example(ctx)
    assert ctx.metadata is not None
    cases = [found[i % len(found)] for i in range(ctx.metadata.max_batch_size + 1)]
    exchange = run_items(ctx, "batch", [item_inputs(ctx, c) for c in cases])
    for index, (case, item) in enumerate(
        zip(cases, require_items(ctx, exchange, len(cases), "grpc-batch"), strict=True)
    ):
        files = require_success(ctx, item, f"item {index} ({case.name})", "grpc-batch")
        judge_outputs(ctx, case, _reader(files), f"{RUN} item {index}", "grpc-batch")


@check("run.mixed-batch", rule="grpc-batch", phase=Phase.RUN)
def run_mixed_batch(ctx: CheckContext) -> None:
    """in a batch with one bad item between two good ones, the bad item fails alone with its
    message and the others succeed as they would alone"""
    found = require_example(ctx)
    bad = next((c for c in ctx.cases if c.kind == casedata.VALIDATION_ERRORS), None)
    if bad is None:
        raise CheckSkipped("needs one validation-error/<case> for the bad item (--model-data)")
    good = [found[0], found[-1]]
    exchange = run_items(
        ctx, "mixed-batch", [item_inputs(ctx, good[0]), item_inputs(ctx, bad), item_inputs(ctx, good[1])]
    )
    first, middle, last = require_items(ctx, exchange, 3, "grpc-batch")
    require_failure(ctx, middle, f"item 1 ({bad.name})", ctx.declared.case_message(bad), "grpc-batch")
    for index, case, item in ((0, good[0], first), (2, good[1], last)):
        files = require_success(ctx, item, f"item {index} ({case.name})", "grpc-batch")
        judge_outputs(ctx, case, _reader(files), f"{RUN} item {index}", "grpc-batch")


@check("run.max-size", rule="grpc-run", phase=Phase.RUN)
def run_max_size(ctx: CheckContext) -> None:
    """an input at its declared maxSize is answered: one item, whole"""
    found = require_example(ctx)
    assert ctx.metadata is not None
    sized = {n: m for n, m in ctx.metadata.input_max.items() if m}
    if not sized:
        raise CheckSkipped("model.yaml declares no inputs.<name>.maxSize")
    if sum(sized.values()) > MESSAGE_LIMIT:
        raise CheckSkipped(
            f"the declared maxSize is over the harness's gRPC message limit of {MESSAGE_LIMIT} bytes"
        )
    inputs = item_inputs(ctx, found[0])
    for name, size in sized.items():
        seed = inputs.get(name) or b"x"
        inputs[name] = (seed * (size // len(seed) + 1))[:size]  # the example's own content, repeated
    (item,) = require_items(ctx, run_items(ctx, "max-size", [inputs]), 1, "grpc-run")
    if not item.success and grpcwire.ERROR_KEY not in item.output:
        raise ctx.finding(
            RUN, "success, or a failure with its error key", "a failure without an error", "grpc-run"
        )


@check("run.flags", rule="grpc-run", phase=Phase.RUN)
def run_flags(ctx: CheckContext) -> None:
    """a Run with detect_drift and explain set is answered like one without: each item whole"""
    found = require_example(ctx)
    exchange = run_items(ctx, "flags", [item_inputs(ctx, found[0])], detect_drift=True, explain=True)
    (item,) = require_items(ctx, exchange, 1, "grpc-run")
    require_success(ctx, item, "the item", "grpc-run")


# -- Shutdown ------------------------------------------------------------------------------


@check("shutdown.response", rule="grpc-shutdown", phase=Phase.SHUTDOWN, starts_container=False)
def grpc_shutdown_response(ctx: CheckContext) -> None:
    """Shutdown answers status_code 200, or drops the connection as the process ends"""
    exchange = ctx.shut_down().exchange
    assert isinstance(exchange, GrpcExchange)
    ctx.details["answer"] = exchange.outcome.value  # "answered", or "dropped" as the process ended
    if not exchange.answered and not exchange.connected:
        raise ctx.finding(
            exchange.route, "an answer with status_code 200", exchange.summary(), "grpc-shutdown"
        )
    if exchange.answered and (not exchange.ok or exchange.status_code != OK):
        raise ctx.finding(
            exchange.route, "gRPC status OK with status_code 200", exchange.summary(), "grpc-shutdown"
        )


@check("shutdown.exit-code", rule="grpc-shutdown", phase=Phase.SHUTDOWN, starts_container=False)
def grpc_shutdown_exit_code(ctx: CheckContext) -> None:
    """after Shutdown the process exits by itself with code 0 (143 is an exit by SIGTERM, not
    its own)"""
    result = ctx.shut_down()
    if result.exit_code is None:
        raise ctx.finding(
            grpcwire.SHUTDOWN_PATH,
            f"the process to exit within {ctx.budget.shutdown_timeout:g} s",
            "still running; killed",
            "grpc-shutdown",
        )
    if result.exit_code != 0:
        why = " (128 + 15: it ended as SIGTERM ends a process)" if result.exit_code == 143 else ""
        raise ctx.finding(
            grpcwire.SHUTDOWN_PATH, "exit code 0", f"exit code {result.exit_code}{why}", "grpc-shutdown"
        )


check("rehearsal.warnings", rule="rehearsal", phase=Phase.SHUTDOWN, starts_container=False, strict_only=True)(
    rehearsal_warnings.func
)


def speak(host: str, port: int) -> GrpcModelClient:
    return GrpcModelClient(host, port)


CONTRACT = Contract("grpc", GRPC, without_cases, speak, "Status")


def battery(found: Sequence[casedata.Case] | None, *, strict: bool = False) -> list[Check]:
    """Every check of the gRPC variant for one image, in the order they run: Shutdown last."""
    return GRPC.battery(found, strict=strict, without_cases=without_cases)


def describe_all() -> list[tuple[str, str, str]]:
    return GRPC.describe()
