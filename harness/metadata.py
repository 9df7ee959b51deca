"""model.yaml (specification 0.3, or 0.4 for the gRPC variant): read, validate, and turn into
numbers Docker can use."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from .errors import SetupError
from .units import parse_duration, parse_size

MIN_MEMORY = 6 * 2**20  # the least memory limit Docker accepts
MODEL_YAML_MAX = 2**20  # bytes of a model.yaml file, given or in the image
MAX_NODES = 10_000  # YAML nodes, aliases counted each time they are used: a billion laughs stays small
MESSAGE_CHARS = 200


@cache
def schema(name: str) -> dict[str, Any]:
    """A JSON schema from ``schemas/`` (shipped inside the package)."""
    text = resources.files("harness").joinpath("schemas", name).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    output_max: dict[str, int | None]  # outputs.<name>.maxSize in bytes, when declared
    output_media: dict[str, str | None]  # outputs.<name>.mediaType, when declared
    input_max: dict[str, int | None]  # inputs.<name>.maxSize in bytes, when declared
    input_types: dict[str, tuple[str, ...]]  # inputs.<name>.acceptedMediaTypes
    gpu_count: int
    memory_bytes: int
    cpu_count: float
    status_timeout: float
    run_timeout: float
    source: str  # where it was read from, for messages and the report
    protocol: str = "http"  # "grpc" for specification 0.4, type grpc
    max_batch_size: int = 1  # features.maxBatchSize (gRPC): items one Run may carry


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


def load_yaml(text: str, source: str) -> Any:
    """A YAML document's data, bounded as model.yaml is; a SetupError when it is not YAML."""
    try:
        return _load_bounded(text, source)
    except yaml.YAMLError:
        raise SetupError(f"{source} is not valid YAML") from None


def _load_bounded(text: str, source: str) -> Any:
    """yaml.safe_load, refusing documents of more than MAX_NODES nodes once aliases are expanded."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        stack, seen = [node], 0
        while stack:
            current = stack.pop()
            seen += 1
            if seen > MAX_NODES:
                raise SetupError(
                    f"{source} expands to more than {MAX_NODES} YAML nodes (aliases that refer "
                    "to aliases?): refused"
                )
            if isinstance(current, yaml.MappingNode):
                stack += [part for pair in current.value for part in pair]
            elif isinstance(current, yaml.SequenceNode):
                stack += current.value
        return loader.construct_document(node)
    finally:
        loader.dispose()


# What an author reads instead of JSON-schema text, by the last part of the field's path.
_FIXES = {
    "version": "version must be three numbers such as 1.0.0 (quote it in YAML: version: '1.0.0')",
    "specification": "specification must be '0.3' (HTTP) or '0.4' (gRPC), quoted (YAML then reads text)",
    "type": "type must be file with specification '0.3' (HTTP), or grpc with '0.4' (gRPC)",
    "size": "must be a size such as 512M or 1G",
    "status": "must be a duration such as 20s or 5m",
    "run": "must be a duration such as 20s or 5m",
    "count": "must be a positive number",
    "maxSize": "must be a size such as 1M or 128K",
}


def problems(data: object) -> list[str]:
    """Every problem of a model.yaml's content, each in the author's terms with its fix."""
    validator = jsonschema.Draft202012Validator(schema("model.schema.json"))
    found: list[str] = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in error.absolute_path)
        last = str(error.absolute_path[-1]) if error.absolute_path else ""
        if error.validator == "required":
            missing = str(error.message).split("'")[1] if "'" in error.message else "a field"
            text = f"{path + '.' if path else ''}{missing} is missing"
        elif path == "version" or (last in _FIXES and error.validator in ("pattern", "type", "const")):
            text = _FIXES["version"] if path == "version" else f"{path}: {_FIXES[last]}"
            if path in ("specification", "type"):
                text = _FIXES[path]
            text += f", got {_short(repr(error.instance))}"
        elif error.validator == "minProperties":
            text = f"{path}: declare at least one file"
        elif error.validator == "type":
            kind = "a mapping of fields" if error.validator_value == "object" else error.validator_value
            text = f"{path or 'model.yaml'}: must be {kind}, got {_short(repr(error.instance))}"
        else:
            text = f"{path or '(top level)'}: {_short(error.message)}"
        if text not in found:
            found.append(text)
    return found[:20]


def parse_metadata(text: str, source: str) -> ModelMetadata:
    """Validate a model.yaml's text; any problem is a SetupError naming ``source``."""
    try:
        data = _load_bounded(text, source)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        problem = getattr(exc, "problem", None)
        what = f": {problem}" if problem else ""
        raise SetupError(f"{source} is not valid YAML{at}{what}") from None
    found = problems(data)
    if found:
        many = f"{len(found)} problems" if len(found) > 1 else "a problem"
        raise SetupError(f"{source} has {many}: " + "; ".join(found))
    for kind in ("inputs", "outputs"):
        for name in data[kind]:
            if "/" in name or name in (".", "..") or "\0" in name:
                raise SetupError(f"{source}: {kind}.{_short(name)}: must be a file name, not a path")

    def value(key: str, parse: Callable[[object], Any], raw: object) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            raise SetupError(f"{source}: {key}: {_short(exc)}") from None

    memory = value("resources.memory.size", parse_size, data["resources"]["memory"]["size"])
    status_timeout = value("timeout.status", parse_duration, data["timeout"]["status"])
    run_timeout = value("timeout.run", parse_duration, data["timeout"]["run"])
    input_max = {
        name: value(f"inputs.{name}.maxSize", parse_size, spec["maxSize"])
        if isinstance(spec, dict) and spec.get("maxSize") not in (None, "")
        else None
        for name, spec in data["inputs"].items()
    }
    output_max = {
        name: value(f"outputs.{name}.maxSize", parse_size, spec["maxSize"])
        if isinstance(spec, dict) and spec.get("maxSize") not in (None, "")
        else None
        for name, spec in data["outputs"].items()
    }
    if memory < MIN_MEMORY:
        raise SetupError(
            f"{source}: resources.memory.size: {memory} bytes is below Docker's minimum of 6 MiB"
        )
    return ModelMetadata(
        name=str(data["name"]),
        version=str(data["version"]),
        inputs=tuple(data["inputs"]),
        outputs=tuple(data["outputs"]),
        output_max=output_max,
        input_max=input_max,
        input_types={
            name: tuple(map(str, spec.get("acceptedMediaTypes") or ())) if isinstance(spec, dict) else ()
            for name, spec in data["inputs"].items()
        },
        gpu_count=int((data["resources"].get("gpu") or {}).get("count") or 0),
        output_media={
            name: str(spec["mediaType"]) if isinstance(spec, dict) and spec.get("mediaType") else None
            for name, spec in data["outputs"].items()
        },
        memory_bytes=memory,
        cpu_count=float(data["resources"]["cpu"]["count"]),
        status_timeout=status_timeout,
        run_timeout=run_timeout,
        source=source,
        protocol="grpc" if data["type"] == "grpc" else "http",
        max_batch_size=int((data.get("features") or {}).get("maxBatchSize") or 1),
    )
